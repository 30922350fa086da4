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

from slidesparse.core.dtypes import dtype_name
from slidesparse.core.errors import UserError
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
    """Picks (and on a miss, searches) the GEMM configuration of a linear at one M_pad."""

    def __init__(self, kind: str, cache_dir: Path | str, gpu_tag: str, *, search_ok=True):
        self.kind = kind
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
        """The cfg of ``lin`` (a QuantLinear) for activations shaped like ``q`` [M_pad, K']."""
        if self.kind in ("cpu-ref", "torch-builtin"):
            return []
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"{lin.name}: no GEMM config for M={q.shape[0]} during CUDA-graph "
                "capture; run the step eagerly once first"
            )
        pattern = lin.pattern or "dense"
        dtype, out = dtype_name(lin.qdtype), dtype_name(lin.acc_dtype)
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
        if lin.fused:
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
        data = lin.weight
        if lin.fused:
            from slidesparse.gemm.cutlass_backends import CutlassWeight

            data = CutlassWeight(lin.weight, lin.meta, lin.w_scale)
        elif self.kind == "cusparselt":
            # The backend indexes by a layout's bit 0; candidates() asks for bit 0 of layout 0 to
            # find x only. Candidates of the other bit are filtered out before anything runs.
            data = {0: lin.weight, 1: lin.weight}
        return PreparedWeight(lin.N, lin.K, ks, dtype, out, p, data)


GEMM_CHOICES = ("auto", "cutlass", "csrc")


def gemm_kind(
    device: str,
    sparse: bool,
    extension_error: str | None = None,
    *,
    gemm: str = "csrc",
    cutlass_error: str | None = None,
) -> str:
    """The GEMM backend a quantized linear runs on.

    cpu-ref on a CPU. On a GPU, ``gemm``: ``cutlass`` the fused-scale CUTLASS GEMMs (an
    error where they cannot run), ``csrc`` cuBLASLt / cuSPARSELt plus a dequant pass (torch's
    built-ins where the csrc extension cannot load), ``auto`` CUTLASS where it runs, else csrc.
    """
    if gemm not in GEMM_CHOICES:
        raise UserError(f"unknown engine GEMM {gemm!r}; valid: {', '.join(GEMM_CHOICES)}")
    if device != "cuda":
        return "cpu-ref"
    if gemm == "cutlass" and cutlass_error:
        raise UserError(f"--gemm cutlass cannot run here: {cutlass_error}")
    if gemm in ("auto", "cutlass") and not cutlass_error:
        return "cutlass-sparse" if sparse else "cutlass"
    if extension_error:
        return "torch-cslt" if sparse else "torch-builtin"
    return "cusparselt" if sparse else "cublaslt"


def extension_error() -> str | None:
    """Why the csrc extension cannot load here (None when it loads)."""
    from slidesparse.native import ops

    return ops.load_error()


def cutlass_error() -> str | None:
    """Why the CUTLASS GEMMs cannot run on this GPU (None when they can)."""
    from slidesparse.native import cutlass

    reason = cutlass.unsupported_reason(tuple(torch.cuda.get_device_capability()))
    return reason or cutlass.load_error()


__all__ = ["ENGINE_A_LAYOUT", "GEMM_CHOICES", "AlgoSelector", "cfg_list", "gemm_kind"]
