"""Task ``kernel-quant``: time one quant kernel launch (checked bit for bit first).

Params: ``kernel`` ("quant_only" | "quant_slide" | "dequant_bias"), ``sparsity`` (quant_slide
only, e.g. "2_8"), ``M``, ``K`` (quant kernels) or ``N`` (dequant_bias), ``in_dtype``
(activation: bf16 fp16 fp32, default bf16; accumulator for dequant_bias: int32 bf16 fp32,
default int32), ``out_dtype`` (int8 | fp8 for quant, default int8; bf16 | fp16 for dequant,
default bf16).

Every timing samples until the spread of its median meets ``ctx.target_spread`` (rows carry
``n_samples``, ``latency_spread``, ``spread_met``; :mod:`slidesparse.core.timing`).
The row carries latency stats, ``gbps`` (bytes moved / median) and in ``extra``: bytes moved,
the launch config, ``copy_gbps`` (a device-to-device copy of the input's size, measured in the
same worker and memoized per size) and ``pct_of_copy``; quant_slide rows also carry
``ratio_vs_quant_only`` (against quant_only at the same M, K, dtypes, timed in this worker)
and ``ideal_ratio`` (the bytes ratio).

On a CPU-only machine (worker device "cpu", where the worker sets ``TRITON_INTERPRET=1``)
the same kernels run in Triton's interpreter: cells of at most :data:`INTERPRETER_MAX_ELEMENTS`
elements are checked bit for bit and timed with perf_counter (timer
``perf_counter(triton-interpreter)``, ``gbps`` null: an interpreter time says nothing about
memory bandwidth); larger cells are skipped before they reach a worker.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import PositiveInt

from slidesparse.core.errors import Unsupported, UserError
from slidesparse.kernels.bench import KERNELS
from slidesparse.tasks import TaskContext, register_task
from slidesparse.tasks.axes import Axes, Sparsity, axis, product

# The interpreter runs a kernel as numpy ops on whole tiles; 2^18 elements take seconds.
INTERPRETER_MAX_ELEMENTS = 2**18
INTERPRETER_TOO_LARGE = "too large for the Triton interpreter on CPU"

_DEFAULT_IN = {"quant_only": "bf16", "quant_slide": "bf16", "dequant_bias": "int32"}
_DEFAULT_OUT = {"quant_only": "int8", "quant_slide": "int8", "dequant_bias": "bf16"}


def _setup_key(params: Mapping[str, Any]) -> str:
    size = params.get("N") if params.get("kernel") == "dequant_bias" else params.get("K")
    return f"quant:{params.get('M')}:{size}:{params.get('in_dtype')}"


def case_from_params(params: Mapping[str, Any]):
    """The :class:`slidesparse.kernels.bench.Case` a cell describes (UserError if malformed)."""
    from slidesparse.kernels.bench import make_case

    kernel = params.get("kernel")
    if kernel not in KERNELS:
        raise UserError(
            f"kernel-quant param kernel={kernel!r} is invalid; valid: {', '.join(KERNELS)}"
        )
    size_name = "N" if kernel == "dequant_bias" else "K"
    if params.get("M") is None or params.get(size_name) is None:
        raise UserError(f"kernel-quant {kernel} needs params M and {size_name}")
    return make_case(
        kernel,
        params["M"],
        params[size_name],
        params.get("in_dtype") or _DEFAULT_IN[kernel],
        params.get("out_dtype") or _DEFAULT_OUT[kernel],
        params.get("sparsity"),
    )


def cell_elements(params: Mapping[str, Any]) -> int | None:
    """Elements of the cell's main input (M·K, or M·N for dequant_bias); None if unknown."""
    size = params.get("N") if params.get("kernel") == "dequant_bias" else params.get("K")
    M = params.get("M")
    if not isinstance(M, int) or not isinstance(size, int):
        return None
    return M * size


def fits_interpreter(params: Mapping[str, Any]) -> bool:
    """Whether the cell is small enough to run under the Triton interpreter on CPU."""
    n = cell_elements(params)
    return n is not None and n <= INTERPRETER_MAX_ELEMENTS


class QuantAxes(Axes):
    """kernel-quant: the three fused Triton kernels over M and K (N for dequant_bias)."""

    kernel: axis(Literal[KERNELS])  # type: ignore[valid-type]
    M: axis(PositiveInt)
    K: axis(PositiveInt) | None = None  # quant_only / quant_slide
    N: axis(PositiveInt) | None = None  # dequant_bias
    sparsity: axis(Sparsity) = ["dense"]
    in_dtype: axis(Literal["bf16", "fp16", "int32", "fp32"]) = ["bf16"]
    out_dtype: axis(Literal["int8", "fp8", "bf16"]) = ["int8"]

    def points(self) -> Iterator[dict[str, Any]]:
        for kernel in self.kernel:
            size_name = "N" if kernel == "dequant_bias" else "K"
            sizes = getattr(self, size_name)
            if not sizes:
                raise ValueError(f"kernel {kernel} needs a '{size_name}' axis")
            for p in product(
                sparsity=self.sparsity,
                M=self.M,
                size=sizes,
                in_dtype=self.in_dtype,
                out_dtype=self.out_dtype,
            ):
                if (kernel == "quant_slide") == (p["sparsity"] == "dense"):
                    continue  # only quant_slide has a sparsity
                if kernel == "dequant_bias":
                    ok = p["in_dtype"] in ("int32", "bf16", "fp32") and p["out_dtype"] == "bf16"
                else:
                    ok = p["in_dtype"] in ("bf16", "fp16") and p["out_dtype"] in ("int8", "fp8")
                if ok:
                    size = p.pop("size")
                    yield {"kernel": kernel, **p, size_name: size}


def quant_operand(params: Mapping[str, Any]) -> tuple[str | None, bool]:
    """The quantized dtype a quant-kernel cell produces (the capability rule checks it)."""
    out = params.get("out_dtype")
    return (out if out in ("int8", "fp8") else None), False


def _skip_reason(params: Mapping[str, Any], has_gpu: bool) -> str | None:
    if not has_gpu and not fits_interpreter(params):
        return f"no CUDA device ({INTERPRETER_TOO_LARGE})"
    return None


# Small cells run on CPU under the Triton interpreter; the worker decides again from its device.
@register_task(
    "kernel-quant",
    axes=QuantAxes,
    default_timeout_s=300,
    needs_gpu=lambda p: not fits_interpreter(p),
    setup_key=_setup_key,
    mode="quant",
    # plan's cost model: the paper preset's H200 shard (48 cells, 0.4 s each); interpreter
    # cells of the smoke preset ~1 s
    cost=lambda p: (0.0, 1.0 if fits_interpreter(p) else 0.4),
    # Same identity as the rows the task measures, so a skip or failure and a later success
    # of one cell share their key columns.
    row_key=lambda p: {"dtype": p.get("in_dtype"), "backend": "triton"},
    operand=quant_operand,
    skip_reason=_skip_reason,
)
def run(params: Mapping[str, Any], ctx: TaskContext) -> list[dict]:
    """Check and time one kernel case; one result row."""
    from slidesparse.kernels import bench, tuning

    case = case_from_params(params)
    if importlib.util.find_spec("triton") is None:
        # Declared a dependency on Linux; elsewhere the kernels cannot run at all.
        raise Unsupported("triton is not installed (pip install triton): the quant kernels need it")
    target = ctx.target_spread
    if ctx.device == "cpu":
        return [_run_interpreted(case, params, target)]
    bench.require_cuda()
    tuning.use(ctx.gpu_tag, ctx.cache_dir)
    copy_key = f"kernel-quant:copy:{case.input_bytes}"
    if copy_key not in ctx.memo:
        ctx.memo[copy_key] = bench.copy_gbps(case.input_bytes, target=target)
    row = bench.bench_case(case, copy_bw=ctx.memo[copy_key], target=target)
    if case.kernel == "quant_slide":
        base_case = bench.make_case("quant_only", case.M, case.size, case.in_dtype, case.out_dtype)
        base_key = f"kernel-quant:base:{base_case}"
        if base_key not in ctx.memo:
            base = bench.bench_case(base_case, target=target, check=False)
            ctx.memo[base_key] = base["latency_us"]
        row["extra"]["ratio_vs_quant_only"] = row["latency_us"] / ctx.memo[base_key]
        row["extra"]["ideal_ratio"] = case.bytes_moved() / base_case.bytes_moved()
    return [row]


def _run_interpreted(case, params: Mapping[str, Any], target: float) -> dict:
    from slidesparse.kernels import bench, numerics

    if not fits_interpreter(params):
        raise Unsupported(
            f"no CUDA device; {case.kernel} M={case.M} x {case.size} is {INTERPRETER_TOO_LARGE} "
            f"(> {INTERPRETER_MAX_ELEMENTS} elements)"
        )
    if not numerics.interpreting():
        raise Unsupported("no CUDA device and TRITON_INTERPRET is not set: cannot run Triton")
    return bench.bench_case_interpreted(case, target=target)
