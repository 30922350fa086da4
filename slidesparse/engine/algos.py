"""GEMM algorithm choice for the engine's quantized linears: searched once, then reused.

Every (GEMM backend, dtype, out dtype, pattern, N, K, M_pad) is looked up in the GPU tag's
search cache (:class:`slidesparse.gemm.search.SearchCache`, the file the ``kernel-gemm`` task
writes), so a shape the kernel matrix already searched costs nothing, and a shape the engine
searches is there for the next run. A missing shape is searched on the first eager forward
at that M (the warm-up before CUDA-graph capture) with the actual quantized activation, by
the same candidate lists, crash-isolated vetting and timing budgets as the kernel task.

cuSPARSELt: the engine keeps one compressed copy of each weight, in the description of
``ENGINE_A_LAYOUT`` (bit 0 of the csrc layout; 1 = W row-major [N, K_slide], torch's), so it
searches layouts with that bit only. A kernel-matrix entry whose winner has the other bit
is not usable; the engine then searches under the key suffixed ``|A<bit>``.

CUTLASS (``cutlass`` / ``cutlass-sparse``): the configurations of the library's family, under
the same keys as the kernel cells of those backends (bf16 output, scales fused).
"""

from __future__ import annotations

from pathlib import Path

import torch

from slidesparse.core import timing
from slidesparse.core.dtypes import dtype_name
from slidesparse.core.errors import UserError
from slidesparse.engine.linear import ACC_DTYPE, FUSED_KINDS
from slidesparse.gemm.base import PreparedWeight
from slidesparse.gemm.search import SearchCache, cache_key, search_backend

ENGINE_A_LAYOUT = 1


def cfg_list(kind: str, config: dict) -> list[int]:
    """A search-result config dict as :func:`slidesparse.engine.linear.engine_mm`'s ``cfg``."""
    if kind == "cublaslt":
        return [int(config.get("algo_index", 0)), int(bool(config.get("separate_c", False)))]
    if kind == "cusparselt":
        return [
            int(config.get("alg_id", 0)),
            int(config.get("split_k", 1)),
            int(config.get("split_k_mode", -1)),
            int(config.get("layout", ENGINE_A_LAYOUT)),
        ]
    if kind in ("cutlass", "cutlass-sparse"):
        from slidesparse.gemm.cutlass_backends import config_args

        return list(config_args(config))
    if kind == "torch-cslt":
        return [
            int(config.get("alg_id", 0)),
            int(config.get("split_k", 1)),
            int(config.get("split_k_mode", -1)),
        ]
    return []


class AlgoSelector:
    """Picks (and on a miss, searches) the GEMM configuration of a linear at one M_pad, on
    one GEMM kind."""

    def __init__(self, kind: str, cache_dir: Path | str, gpu_tag: str, *, search_ok=True):
        self.kind = kind
        self.fused = kind in FUSED_KINDS
        self.cache_dir = Path(cache_dir)
        self.gpu_tag = gpu_tag
        self.search_ok = search_ok
        self.cache = SearchCache.open(self.cache_dir, gpu_tag)
        self.log: list[dict] = []  # one entry per pick: key, cached, search seconds
        self._memo: dict[str, list[int]] = {}  # key -> cfg picked in this process

    def _backend(self, pattern):
        from slidesparse import gemm
        from slidesparse.core.sparsity import parse_pattern

        return gemm.make_backend(gemm.get_spec(self.kind), "cuda", parse_pattern(pattern))

    def pick(self, lin, q: torch.Tensor) -> list[int]:
        """The cfg of ``lin`` (a QuantLinear) on this kind for activations shaped like ``q``
        [M_pad, K']."""
        if self.kind in ("cpu-ref", "torch-builtin"):
            return []
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"{lin.name}: no GEMM config for M={q.shape[0]} during CUDA-graph "
                "capture; run the step eagerly once first"
            )
        pattern = lin.pattern or "dense"
        dtype, out = dtype_name(lin.qdtype), dtype_name(self._out(lin.qdtype))
        key = cache_key(self.kind, dtype, out, pattern, lin.N, lin.K, q.shape[0])
        memo = self._memo.get(key)
        if memo is not None:  # every layer has the same shapes: pick once per process
            return list(memo)
        cfg = self._pick(lin, q, key, pattern, dtype, out)
        self._memo[key] = cfg
        return list(cfg)

    def _pick(self, lin, q, key, pattern, dtype, out) -> list[int]:
        hit = self.cache.get(key)
        if hit is not None and self._usable(hit.get("config")):
            self.log.append({"key": key, "cached": True})
            return cfg_list(self.kind, hit["config"])
        if self.kind == "cusparselt":
            key += f"|A{ENGINE_A_LAYOUT}"
        backend = self._backend(pattern)
        w = self._prepared(lin, pattern, dtype, out)
        if self.fused:
            from slidesparse.gemm.cutlass_backends import CutlassInput

            q = CutlassInput.unit(q)  # the search times the epilogue, not these values
        cands = backend.candidates(w, q)
        if self.kind == "cusparselt":
            cands = [c for c in cands if (c.get("layout", 0) & 1) == ENGINE_A_LAYOUT]
        cands, _ = backend.vet_candidates(
            w, q, cands, cache_dir=self.cache_dir, gpu_tag=self.gpu_tag
        )
        if not cands:
            raise RuntimeError(f"{lin.name}: no {self.kind} configuration survived vetting")
        if len(cands) == 1 or not self.search_ok:
            hit = self.cache.get(key)
            config = hit["config"] if hit else cands[0]
            self.log.append({"key": key, "cached": hit is not None, "searched": False})
            return cfg_list(self.kind, config)
        found = search_backend(backend, w, q, cands, device="cuda", cache=self.cache, key=key,
                               extra={"by": "engine"})  # fmt: skip
        self.log.append({"key": key, "cached": found.cached, "search_s": found.search_s})
        return cfg_list(self.kind, found.config)

    def _out(self, qdtype: torch.dtype) -> torch.dtype:
        return torch.bfloat16 if self.fused else ACC_DTYPE[qdtype]

    def _usable(self, config) -> bool:
        if not isinstance(config, dict):
            return False
        if self.kind == "cusparselt":
            return (int(config.get("layout", 0)) & 1) == ENGINE_A_LAYOUT
        return True

    def _prepared(self, lin, pattern, dtype: str, out: str) -> PreparedWeight:
        """``lin``'s weight as the gemm backend's PreparedWeight (no copy)."""
        from slidesparse.core.sparsity import k_slide, parse_pattern

        p = parse_pattern(pattern)
        ks = lin.K if p.is_dense else k_slide(lin.K, p)
        data, meta = lin.form(self.kind)
        if self.fused:
            from slidesparse.gemm.cutlass_backends import CutlassWeight

            data = CutlassWeight(data, meta, lin.w_scale)
        elif self.kind == "cusparselt":
            # The backend indexes by a layout's bit 0; candidates() asks for bit 0 of layout 0 to
            # find x only. Candidates of the other bit are filtered out before anything runs.
            data = {0: data, 1: data}
        return PreparedWeight(lin.N, lin.K, ks, dtype, out, p, data)


GEMM_CHOICES = ("auto", "cutlass", "csrc")


def gemm_kinds(
    device: str,
    sparse: bool,
    extension_error: str | None = None,
    *,
    gemm: str = "auto",
    cutlass_error: str | None = None,
) -> tuple[str, ...]:
    """The GEMM kinds a quantized linear may run on: one, or two for the router to choose.

    cpu-ref on a CPU. On a GPU, ``gemm``: ``cutlass`` the fused-scale CUTLASS GEMMs (an
    error where they cannot run); ``csrc`` cuBLASLt / cuSPARSELt plus a dequant pass (torch's
    built-ins where the csrc extension cannot load); ``auto`` both where CUTLASS runs (the
    faster whole linear is kept per layer shape and M, see :class:`Router`), else csrc.
    """
    if gemm not in GEMM_CHOICES:
        raise UserError(f"unknown engine GEMM {gemm!r}; valid: {', '.join(GEMM_CHOICES)}")
    if device != "cuda":
        return ("cpu-ref",)
    if gemm == "cutlass" and cutlass_error:
        raise UserError(f"--gemm cutlass cannot run here: {cutlass_error}")
    fused = "cutlass-sparse" if sparse else "cutlass"
    if extension_error:
        csrc = "torch-cslt" if sparse else "torch-builtin"
    else:
        csrc = "cusparselt" if sparse else "cublaslt"
    if gemm == "cutlass":
        return (fused,)
    if gemm == "auto" and not cutlass_error:
        return (fused, csrc)
    return (csrc,)


# How long the router times the two routes of one (shape, M_pad): the decision needs the
# sign of a difference, not a 1% figure, and is cached per GPU tag.
ROUTE_POLICY = timing.Adaptive(target=0.01, min_samples=10, max_s=0.5)


def route_key(kinds, lin, M_pad: int, gated: bool) -> str:
    """The search-cache key of one route decision."""
    shape = f"{lin.pattern or 'dense'}|N{lin.N}|K{lin.K}|M{M_pad}"
    post = "|gated" if gated else ""
    return f"route|{'+'.join(kinds)}|{dtype_name(lin.qdtype)}|{shape}{post}"


class Router:
    """The GEMM route of every quantized linear per padded M: with one kind, that kind's
    searched config; with two (``--gemm auto``: fused-scale CUTLASS, cuBLASLt / cuSPARSELt
    + dequant), both configs, then both whole linears (GEMM and the pass after it, on the
    real activation) timed alternately and the faster kept.

    Decisions are cached per GPU tag next to the searched configs, so a run repeats the
    choice of the last instead of re-deciding a near tie. ``routes``: linear name (without
    its layer) -> {M_pad: (kind, decision key)}, see :meth:`summary`; ``decisions``: key ->
    timing record.
    """

    def __init__(self, kinds, cache_dir: Path | str, gpu_tag: str, *, search_ok=True,
                 device: str = "cuda", policy: timing.Policy = ROUTE_POLICY):  # fmt: skip
        self.kinds = tuple(kinds)
        self.selectors = {k: AlgoSelector(k, cache_dir, gpu_tag, search_ok=search_ok)
                          for k in self.kinds}  # fmt: skip
        self.cache = self.selectors[self.kinds[0]].cache  # one file for configs and routes
        self.device = device
        self.policy = policy
        self.routes: dict[str, dict[int, tuple[str, str | None]]] = {}
        self.decisions: dict[str, dict] = {}

    @property
    def log(self) -> list[dict]:
        """Every config pick of every kind (key, cached, search seconds)."""
        return [e for s in self.selectors.values() for e in s.log]

    def route(self, lin, q: torch.Tensor, run, gated: bool = False) -> tuple[str, list[int]]:
        """(kind, cfg) for ``lin`` at q [M_pad, K']; ``run(kind, cfg)`` is the whole linear
        (``gated``: followed by SiLU-and-mul, which changes what the routes cost)."""
        cfgs = {k: self.selectors[k].pick(lin, q) for k in self.kinds}
        kind, key = self.kinds[0], None
        if len(self.kinds) > 1:
            key = route_key(self.kinds, lin, q.shape[0], gated)
            calls = {k: (lambda k=k: run(k, cfgs[k])) for k in self.kinds}
            kind = self.choose(key, calls, graph=q.shape[0] <= timing.GRAPH_MAX_M)
        short = lin.name.split(".", 2)[-1] if lin.name.startswith("layers.") else lin.name
        self.routes.setdefault(short, {})[q.shape[0]] = (kind, key)
        return kind, cfgs[kind]

    def summary(self) -> dict[str, dict[str, dict]]:
        """For a result row: linear -> M_pad -> {kind, and with two kinds the time ratio of
        the first kind over the second (above 1: the second is faster) and whether its 95%
        interval holds 1}."""
        out: dict[str, dict[str, dict]] = {}
        for name, by_m in self.routes.items():
            for M, (kind, key) in sorted(by_m.items()):
                d = self.decisions.get(key) if key else None
                rec = {"kind": kind}
                if d:
                    rec.update(ratio=round(d["ratio"], 4), tie=d["tie"])
                out.setdefault(name, {})[str(M)] = rec
        return out

    def choose(self, key: str, calls: dict, graph: bool = False) -> str:
        """The faster of two calls (kind -> callable), decided once per key. ``graph``: time
        CUDA-graph replays (a short call, whose eager time is the host's launches). A cached
        decision is reused only if it was timed the same way and chose a kind still offered."""
        graph = graph and self.device == "cuda"
        timer = timing.timer_name(self.device, graph)
        got = self.decisions.get(key) or self.cache.get(key)
        if got is not None and got.get("kind") in calls and got.get("timer") == timer:
            self.decisions[key] = got
            return got["kind"]
        (ka, fa), (kb, fb) = calls.items()
        pair = timing.time_pair(fa, fb, self.device, self.policy, graph=graph)
        lo, hi = pair.ratio_ci
        # ratio = time(a) / time(b): above 1, b is faster.
        won = kb if pair.ratio > 1.0 else ka
        record = {
            "kind": won,
            "us": {ka: pair.a.median_us, kb: pair.b.median_us},
            "ratio": pair.ratio,  # time of the first kind over the second's
            "ratio_ci": [lo, hi],
            "tie": lo <= 1.0 <= hi,
            "n_samples": len(pair.ratios),
            "timer": pair.a.timer,
            "by": "engine-router",
        }
        self.decisions[key] = record
        self.cache.put(key, record)
        return won


def extension_error() -> str | None:
    """Why the csrc extension cannot load here (None when it loads)."""
    from slidesparse.native import ops

    return ops.load_error()


def cutlass_error(dtype: str) -> str | None:
    """Why the CUTLASS GEMMs of operand ``dtype`` cannot run on this GPU (None when they can)."""
    from slidesparse.native import cutlass

    reason = cutlass.unsupported_reason(tuple(torch.cuda.get_device_capability()), dtype)
    return reason or cutlass.load_error()


__all__ = [
    "ENGINE_A_LAYOUT",
    "GEMM_CHOICES",
    "AlgoSelector",
    "Router",
    "cfg_list",
    "gemm_kinds",
]
