"""Task ``kernel-gemm``: one GEMM cell (or one model's four layers), checked, then timed.

Params (missing ones take the defaults below):

* ``mode``: ``"model"`` (the layer shapes of ``model``) or ``"square"`` (M = N = K unless N/K
  are given).
* ``model``, ``layer``: for model mode; ``layer`` None runs all four layers and adds a
  ``layer="total"`` row whose latency is the sum of the layer medians at the same M.
* ``M`` (required), ``N``, ``K``, ``dtype`` (required: fp16 bf16 int8 fp8 fp4),
  ``out_dtype`` (default per dtype), ``sparsity`` (default ``dense``), ``backend`` (default:
  cpu-ref on a CPU worker, cublaslt/cusparselt on a GPU worker), ``seed``.

Weights are generated, pruned, slid and prepared (compressed) once per (backend, N, K,
pattern, dtype) and kept in ``ctx.memo``; the searched algorithm is kept in the GPU tag's
search cache. Every configuration is checked against the fp64 product of the pruned dense
operands before it is timed.

Timing is adaptive to ``ctx.target_spread`` (rows: ``n_samples``, ``latency_spread``,
``spread_met``; ``extra.phase_s``: seconds per phase of the cell). A sparse cell times the
strongest dense call of its shape (same dtype, out_dtype, M, N, K) measured in this worker
(where none was, it measures the dense baselines itself first: cuBLASLt, and CUTLASS where
built) interleaved with its own
(:func:`slidesparse.core.timing.time_pair`): ``extra`` gets the median per-round speedup
``speedup_vs_dense``, its 95% interval ``speedup_lo``/``speedup_hi``, ``speedup_spread``,
``dense_latency_us`` and ``dense_backend``, and ``baseline_suspect`` flags a speedup beyond
L/(L-2) by more than 3% (None without a dense twin).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import PositiveInt

from slidesparse import gemm
from slidesparse.core import dtypes, metrics, timing
from slidesparse.core.dtypes import BYTES
from slidesparse.core.errors import UserError
from slidesparse.core.models import LAYERS
from slidesparse.gemm import operands
from slidesparse.gemm.search import SearchCache, cache_key, search_backend
from slidesparse.tasks import TaskContext, register_task
from slidesparse.tasks.axes import Axes, GemmDtype, ModelName, Sparsity, axis

# Raw GEMM outputs this task can ask a backend for.
_OUT_DTYPES = ("fp16", "bf16", "int32", "fp32")
# Adaptive timing of a row: the caps bound a model sweep's worst case (a GPU GEMM usually
# meets 1% long before; CPU reference GEMMs rarely do, so the smoke preset stays short).
_SAMPLING = {"cpu": {"min_samples": 5, "max_s": 0.3}, "cuda": {"min_samples": 10, "max_s": 1.0}}


def _setup_key(params: Mapping[str, Any]) -> str:
    shape = params.get("layer") or f"{params.get('N')}x{params.get('K')}"
    return (
        f"gemm:{params.get('backend')}:{params.get('dtype')}:{params.get('sparsity')}:"
        f"{params.get('model')}:{shape}"
    )


def _shard_key(params: Mapping[str, Any]) -> str:
    # Every backend and pattern of one shape at one M: the sparse cells and the dense ones
    # they are timed against share a shard (and its search cache).
    rest = {k: v for k, v in params.items() if k not in ("backend", "sparsity")}
    return "kernel-gemm:" + json.dumps(rest, sort_keys=True, default=str)


def _rank(params: Mapping[str, Any]) -> int:
    return 0 if (params.get("sparsity") or "dense") == "dense" else 1


def _int_param(params: Mapping[str, Any], name: str, required: bool = False) -> int | None:
    v = params.get(name)
    if v is None:
        if required:
            raise UserError(f"kernel-gemm needs param {name!r} (a positive integer)")
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise UserError(f"kernel-gemm param {name}={v!r} must be a positive integer")
    return v


def resolve_shapes(params: Mapping[str, Any]) -> list[tuple[str | None, int, int]]:
    """(layer, N, K) for each GEMM the cell runs."""
    mode = params.get("mode") or ("model" if params.get("model") else "square")
    M = _int_param(params, "M", required=True)
    N, K = _int_param(params, "N"), _int_param(params, "K")
    if mode == "square":
        return [(None, N or M, K or M)]
    if mode != "model":
        raise UserError(f"kernel-gemm mode {mode!r} is invalid; valid: model, square")
    if not params.get("model"):
        raise UserError("kernel-gemm model mode needs param 'model' (e.g. Qwen2.5-7B)")
    from slidesparse.core.models import get_model

    spec = get_model(params["model"])
    layer = params.get("layer")
    if layer is None:
        return [(name, *spec.layers[name]) for name in LAYERS]
    if layer not in LAYERS:
        raise UserError(f"kernel-gemm layer {layer!r} is invalid; valid: {', '.join(LAYERS)}")
    return [(layer, *spec.layers[layer])]


def _device_cc(device: str) -> tuple[int, int] | None:
    if device != "cuda":
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability())


def _checks(spec_name: str, device: str, cc, dtype: str) -> dict:
    """Keyword checks for gemm.select_backend: dtype support on this cc, extension state."""
    checks: dict[str, Any] = {}
    if cc is not None:
        try:
            from slidesparse.core.hardware import capabilities
        except ImportError:  # without the capability table the library call decides
            capabilities = None
        if capabilities is not None:
            checks["dtype_ok_on_cc"] = capabilities(cc).supports
    spec = gemm.get_spec(spec_name)
    if spec.needs_extension and device == "cuda" and cc is not None:
        from slidesparse.native import ops

        checks["extension_error"] = ops.load_error()
    if spec.needs_cutlass and device == "cuda" and cc is not None:
        from slidesparse.native import cutlass

        checks["cutlass_error"] = cutlass.unsupported_reason(cc, dtype) or cutlass.load_error()
    return checks


def default_backend(device: str, pattern) -> str:
    """The backend a cell without one runs on."""
    if device != "cuda":
        return "cpu-ref"
    return "cublaslt" if pattern.is_dense else "cusparselt"


def default_out_dtype(backend: str, dtype: str) -> str:
    """The raw output a cell without ``out_dtype`` writes: the dtype's default, or the
    backend's own where it cannot write that (CUTLASS's fused-scale GEMMs write bf16 only)."""
    default = dtypes.DEFAULT_OUT_DTYPE[dtype]
    known = backend in gemm.backend_names()
    outs = getattr(gemm.get_spec(backend).cls, "out_dtypes", {}).get(dtype, ()) if known else ()
    return default if not outs or default in outs else outs[0]


def _operands(ctx, backend, spec_name, dtype, out_dtype, pattern, M, N, K, seed):
    """(w_values, prepared weight, x_values) from the worker's memo (made on a miss)."""
    w_values, w = operands.cached_weight(ctx.memo, ctx.device, backend, spec_name, dtype,
                                         out_dtype, pattern, N, K, seed)  # fmt: skip
    return w_values, w, operands.cached_activation(ctx.memo, ctx.device, dtype, M, K, seed)


def search_cache(ctx) -> SearchCache:
    """The GPU tag's searched-algorithm cache, opened once per worker context."""
    c = ctx.memo.get("kernel-gemm.search-cache")
    if c is None:
        c = ctx.memo["kernel-gemm.search-cache"] = SearchCache.open(ctx.cache_dir, ctx.gpu_tag)
    return c


def run_gemm(ctx: TaskContext, *, spec, backend, dtype, out_dtype, pattern, M, N, K, seed):
    """Check and time one GEMM; the result row (without model/layer/mode)."""
    device = ctx.device
    phases = timing.Phases(device)
    w_values, w, x_values = _operands(ctx, backend, spec.name, dtype, out_dtype, pattern, M, N, K,
                                      seed)  # fmt: skip
    inp = backend.prepare_input(x_values, w)
    phases.mark("prepare")
    candidates, left_out = backend.vet_candidates(
        w, inp, backend.candidates(w, inp), cache_dir=ctx.cache_dir, gpu_tag=ctx.gpu_tag
    )
    phases.mark("vet")
    if not candidates:
        first = next(iter(left_out.items()), ("", {}))
        raise RuntimeError(
            f"every {spec.name} configuration failed its crash-isolated check on this GPU "
            f"({len(left_out)} left out; e.g. {first[0]}: {first[1].get('status')} "
            f"{first[1].get('detail')})"
        )

    if len(candidates) > 1:
        key = cache_key(spec.name, dtype, out_dtype, pattern.name, N, K, M)
        found = search_backend(backend, w, inp, candidates, device=device,
                               cache=search_cache(ctx), key=key)  # fmt: skip
        config = found.config
        search_info = {
            "cached": found.cached,
            "n_tried": found.n_tried,
            "n_rejected": found.n_rejected,
            "search_s": round(found.search_s, 3),
            "left_out": len(left_out),
        }
    else:
        config, search_info = candidates[0], None

    phases.mark("search")
    call = backend.make_call(w, inp, config)
    rows = operands.check_rows(M)
    out = call()
    # FP4 backends quantize with block scales: they give the product of what they dequantize.
    own = backend.reference(w, inp, rows)
    ref, abs_ref = own if own is not None else operands.reference(x_values, w_values, rows)
    correct, max_err = operands.compare(out, ref, rows, out_dtype, abs_ref, operands.ACC_EPS[dtype])
    del out, ref, abs_ref
    phases.mark("check")

    policy = (timing.Fixed(ctx.fixed_samples) if ctx.fixed_samples
              else timing.Adaptive(ctx.target_spread, **_SAMPLING[device]))  # fmt: skip
    dense = None if pattern.is_dense else _dense_call(ctx, dtype, out_dtype, M, N, K, seed)
    phases.mark("baseline")
    pair = dense and timing.time_pair(dense[0], call, device, policy)
    stats = timing.summarize(pair.b if pair else timing.time_adaptive(call, device, policy))
    if pair:  # the pair stopped on the ratio's spread and both latencies'
        stats["spread_met"] = pair.met
    phases.mark("time")
    lat_s = stats["latency_us"] * 1e-6
    k_eff = w.K_slide if not pattern.is_dense else K
    w_bytes = N * k_eff * BYTES[dtype] * (0.5 if not pattern.is_dense else 1.0)
    moved = M * k_eff * BYTES[dtype] + w_bytes + M * N * BYTES[out_dtype]
    row = {
        "dtype": dtype,
        "out_dtype": out_dtype,
        "backend": spec.name,
        "sparsity": pattern.name,
        "M": M,
        "N": N,
        "K": K,
        "K_slide": w.K_slide,
        **stats,
        # Useful operations of the original product, so TOPS compare across patterns.
        "tops": 2.0 * M * N * K / lat_s / 1e12,
        "gbps": moved / lat_s / 1e9,
        "correct": correct,
        "max_abs_err": max_err,
        "alg_id": None,
        "split_k": None,
        "workspace_bytes": None,
        **backend.describe(w, config),
        "extra": {"config": config, "seed": seed, "search": search_info,
                  "target_spread": ctx.target_spread, "phase_s": phases.seconds},
    }  # fmt: skip
    if pattern.is_dense:
        if correct:
            _remember_dense(ctx, row)
        row["baseline_suspect"] = False
    elif not pair:
        row["baseline_suspect"] = None
    else:
        lo, hi = pair.ratio_ci
        row["extra"].update(speedup_vs_dense=pair.ratio, speedup_lo=lo, speedup_hi=hi,
                            speedup_spread=pair.spread, dense_latency_us=pair.a.median_us,
                            dense_backend=dense[1]["backend"])  # fmt: skip
        row["baseline_suspect"] = metrics.is_suspect(pair.ratio, pattern)
    return row


# ctx.memo: (device, dtype, out_dtype, M, N, K) -> how to rebuild the strongest correct dense
# call of that shape measured in this worker. Only the recipe is kept (a few strings): its
# weight and input come back through the LRUs above, so no operand is pinned here.
_DENSE = "kernel-gemm.dense"


def _remember_dense(ctx, row: dict) -> None:
    """Keep the row's call as its shape's baseline if it is the strongest measured so far."""
    known = ctx.memo.setdefault(_DENSE, {})
    key = (ctx.device, *(row[c] for c in ("dtype", "out_dtype", "M", "N", "K")))
    if key not in known or row["latency_us"] < known[key]["latency_us"]:
        extra = row["extra"]
        known[key] = {"backend": row["backend"], "config": extra["config"],
                      "seed": extra["seed"], "latency_us": row["latency_us"]}  # fmt: skip


# The dense GEMMs a sparse cell measures itself when no dense cell of its shape ran in this
# worker (another shard or worker ran them, or an earlier run): the searched library GEMMs.
_BASELINES = {"cuda": ("cublaslt", "cutlass"), "cpu": ("cpu-ref",)}


def _measure_baselines(ctx, dtype, out_dtype, M, N, K, seed) -> None:
    """Run the shape's dense baselines that can write ``out_dtype`` here (rows dropped), so
    a sparse cell is paired the same whichever shard, worker or run it lands in."""
    from slidesparse.core.errors import Unsupported
    from slidesparse.core.sparsity import parse_pattern

    dense = parse_pattern("dense")
    cc = _device_cc(ctx.device)
    for name in _BASELINES.get(ctx.device, ()):
        if gemm.get_spec(name).needs_cutlass:
            from slidesparse.native import cutlass

            if cutlass.unsupported_reason(cc, dtype) or not cutlass.is_built():
                continue  # a baseline is not worth a CUTLASS build (minutes) in a sparse cell
        try:
            spec = gemm.select_backend(name, dtype, device=ctx.device, cc=cc,
                                       **_checks(name, ctx.device, cc, dtype))  # fmt: skip
            backend = gemm.make_backend(spec, ctx.device, dense)
            backend.check_out_dtype(dtype, out_dtype)
        except Unsupported:
            continue
        run_gemm(ctx, spec=spec, backend=backend, dtype=dtype, out_dtype=out_dtype,
                 pattern=dense, M=M, N=N, K=K, seed=seed)  # fmt: skip


def _dense_call(ctx, dtype, out_dtype, M, N, K, seed):
    """(call, recipe) of the shape's strongest dense baseline in this worker, rebuilt (measured
    first where none is known); None where no dense GEMM of the shape runs here."""
    from slidesparse.core.sparsity import parse_pattern

    key = (ctx.device, dtype, out_dtype, M, N, K)
    tried = ctx.memo.setdefault("kernel-gemm.baselines-tried", set())
    if key not in ctx.memo.get(_DENSE, {}) and key not in tried:
        tried.add(key)  # once: a baseline that is wrong here stays unpaired, not re-measured
        _measure_baselines(ctx, dtype, out_dtype, M, N, K, seed)
    base = ctx.memo.get(_DENSE, {}).get(key)
    if base is None:
        return None
    dense = parse_pattern("dense")
    spec = gemm.get_spec(base["backend"])
    backend = gemm.make_backend(spec, ctx.device, dense)
    seed = base["seed"]
    _, w, x_values = _operands(ctx, backend, spec.name, dtype, out_dtype, dense, M, N, K, seed)
    inp = backend.prepare_input(x_values, w)
    return backend.make_call(w, inp, base["config"]), base


# Backends a block may name, and whether each implements dense weights, slid 2:4 ones or both.
BACKEND_KIND = {
    "cpu-ref": "both",
    "cublaslt": "dense",
    "torch-builtin": "dense",
    "cusparselt": "sparse",
    "torch-cslt": "sparse",
    "cutlass": "dense",
    "cutlass-sparse": "sparse",
}


def pairs(kind: str, sparsity: str) -> bool:
    """Whether a backend of ``kind`` ("dense" | "sparse" | "both") implements ``sparsity``."""
    return kind == "both" or (kind == "dense") == (sparsity == "dense")


class GemmAxes(Axes):
    """kernel-gemm: model shapes (each layer of each model) or square M=N=K."""

    mode: axis(Literal["model", "square"])
    backend: axis(Literal[tuple(BACKEND_KIND)])  # type: ignore[valid-type]
    dtype: axis(GemmDtype)
    sparsity: axis(Sparsity)
    M: axis(PositiveInt)
    model: axis(ModelName) | None = None
    layer: axis(Literal[LAYERS]) | None = None  # type: ignore[valid-type]
    # Square mode: N = K = each value here; absent, N = K = M (the paper's M=N=K).
    NK: axis(PositiveInt) | None = None

    def points(self) -> Iterator[dict[str, Any]]:
        from slidesparse.core.models import get_model

        for mode in self.mode:
            if mode == "model":
                if not self.model:
                    raise ValueError("mode 'model' needs a 'model' axis")
                shapes = [
                    (m, layer, *get_model(m).layers[layer])
                    for m in self.model
                    for layer in (self.layer or LAYERS)
                ]
            else:
                shapes = [(None, None, None, None)]
            for (model, layer, n, k), backend, dtype, sparsity, m in itertools.product(
                shapes, self.backend, self.dtype, self.sparsity, self.M
            ):
                if not pairs(BACKEND_KIND[backend], sparsity):
                    continue
                for nk in (self.NK or [m]) if mode == "square" else [None]:
                    yield dict(
                        mode=mode,
                        model=model,
                        layer=layer,
                        M=m,
                        N=n if nk is None else nk,
                        K=k if nk is None else nk,
                        dtype=dtype,
                        backend=backend,
                        sparsity=sparsity,
                    )


def _memory_bytes(p: Mapping[str, Any], rules) -> float:
    """Operands, output, and for 2_L the slid copies and the compressed weight, plus reserve."""
    from slidesparse.core.sparsity import k_slide, parse_pattern

    b = rules.bytes_per_element[p["dtype"]]
    m, n, k = p["M"], p["N"], p["K"]
    total = (m * k + n * k) * b + m * n * rules.gemm_out_bytes[p["dtype"]]
    pattern = parse_pattern(p["sparsity"])
    if not pattern.is_dense:
        ks = k_slide(k, pattern)
        # slid activation + slid weight + compressed copy (values + metadata)
        total += (m * ks + n * ks) * b + n * ks / 2 * b * 1.125
    return total + rules.gemm_reserve_bytes


def _skip_reason(p: Mapping[str, Any], has_gpu: bool) -> str | None:
    if has_gpu and p.get("backend") == "cpu-ref":
        # The CPU reference stands in for the GPU backends where there is none. Its timings
        # under a GPU's tag would sit in that GPU's tables as if the GPU had produced them.
        return "cpu-ref runs only on machines without a GPU (this one has a CUDA device)"
    return None


# plan's cost model for a machine with no history of the task: seconds per cell = a fixed part
# (plan creation, search bookkeeping, the check) + seconds per 2·M·N·K for the GEMM work of
# its search and timing. Fitted to the paper preset's shard 0/64 on an H200
# (benchmarks/matrix_speed.py; README, "Measured"); a GPU's own history replaces it after its
# first run. torch-builtin / torch-cslt: per-cell medians of the smoke preset on an H200.
_COST = {"cublaslt": (0.04, 2e-13), "cusparselt": (0.10, 1.4e-12), "cutlass": (0.04, 3e-13),
         "cutlass-sparse": (0.05, 3e-13), "torch-builtin": (0.5, 0.0),
         "torch-cslt": (30.0, 0.0)}  # fmt: skip
# Crash-isolated vetting of the cuSPARSELt grid: once per GPU tag and operand dtype (about 20 s
# per dtype on the H200 shard).
_VET_ONCE_S = 20.0


def _cost(p: Mapping[str, Any]) -> tuple[float, float] | tuple[float, float, dict[str, float]]:
    backend = p.get("backend") or "cublaslt"
    M = float(p.get("M") or 1)
    work = 2.0 * M * float(p.get("N") or M) * float(p.get("K") or M)
    if backend == "cpu-ref":
        return 0.2, 0.5 + work / 4e9
    fixed, per_op = _COST.get(backend, (0.5, 1.4e-12))
    if backend == "cusparselt":
        return 0.02, fixed + per_op * work, {f"vet:{p.get('dtype')}": _VET_ONCE_S}
    return 0.02, fixed + per_op * work


@register_task(
    "kernel-gemm",
    axes=GemmAxes,
    default_timeout_s=900,
    needs_gpu=lambda p: p.get("backend") != "cpu-ref",
    setup_key=_setup_key,
    shard_key=_shard_key,
    rank=_rank,
    operand=lambda p: (p["dtype"], p.get("sparsity") not in (None, "dense")),
    memory_bytes=_memory_bytes,
    skip_reason=_skip_reason,
    cost=_cost,
)
def run(params: Mapping[str, Any], ctx: TaskContext) -> list[dict]:
    """Check and time the cell's GEMM(s); one row per layer (plus the model total)."""
    from slidesparse.core.sparsity import parse_pattern

    dtype = gemm.check_dtype(str(params.get("dtype")))
    pattern = parse_pattern(params.get("sparsity") or "dense")
    name = params.get("backend") or default_backend(ctx.device, pattern)
    out_dtype = params.get("out_dtype") or default_out_dtype(name, dtype)
    if out_dtype not in _OUT_DTYPES:
        raise UserError(
            f"kernel-gemm out_dtype {out_dtype!r} is invalid; valid: {list(_OUT_DTYPES)}"
        )
    seed = int(params.get("seed") or 0)
    shapes = resolve_shapes(params)
    M = params["M"]
    if not gemm.get_spec(name).needs_cuda and ctx.device != "cpu":
        # A CPU backend (cpu-ref) on a GPU worker must build its operands on the CPU and be
        # timed with perf_counter: CUDA events around CPU work measured nothing.
        ctx = dataclasses.replace(ctx, device="cpu")
    cc = _device_cc(ctx.device)
    spec = gemm.select_backend(
        name, dtype, device=ctx.device, cc=cc, **_checks(name, ctx.device, cc, dtype)
    )
    backend = gemm.make_backend(spec, ctx.device, pattern)
    backend.check_out_dtype(dtype, out_dtype)

    mode = params.get("mode") or ("model" if params.get("model") else "square")
    rows = []
    for layer, N, K in shapes:
        row = run_gemm(
            ctx, spec=spec, backend=backend, dtype=dtype, out_dtype=out_dtype,
            pattern=pattern, M=M, N=N, K=K, seed=seed,
        )  # fmt: skip
        rows.append({"model": params.get("model"), "layer": layer, "mode": mode, **row})
    if len(rows) > 1:
        rows.append(metrics.total_row(rows))
    if spec.name != name:
        for r in rows:
            r.setdefault("extra", {})["requested_backend"] = name
    return rows
