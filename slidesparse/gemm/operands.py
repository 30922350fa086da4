"""Operands and the fp64 reference every GEMM cell is checked against.

Operands are generated as float tensors whose values are exactly representable in the
operand dtype (integers in [-127, 127] for INT8, E4M3 values for FP8, E2M1 values for FP4,
rounded normals for FP16/BF16), so the reference product of the values is the exact answer
any correct kernel must reproduce up to the rounding of its output dtype.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from slidesparse.core.dtypes import torch_dtype

if TYPE_CHECKING:
    import torch

# E2M1 magnitudes (FP4): the only values a 4-bit float holds.
_FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)

# Relative tolerance of one output element, by output dtype: the rounding of the output
# (2^-8 for BF16's 8-bit significand, 2^-11 for FP16) plus slack for fp32 accumulation order.
_RTOL = {"int32": 0.0, "fp32": 1e-5, "fp16": 2.0**-9, "bf16": 2.0**-7}
# Accumulation error per unit of sum|x·w|, by operand dtype. FP8 (and FP4) tensor-core
# accumulation on sm90 keeps fewer bits than fp32 unless the library promotes partial sums;
# cuSPARSELt's FP8 kernels measurably do not (max error ~3% of a typical |y| at K=19k on an
# H200), so FP8 is judged against 2^-10 of sum|x·w|. A wrong index or layout errs by O(|y|),
# which stays far outside this.
ACC_EPS = {"int8": 0.0, "fp16": 2.0**-20, "bf16": 2.0**-20, "fp8": 2.0**-10, "fp4": 2.0**-10}


def compact_dtype(dtype: str) -> torch.dtype:
    """The smallest float dtype holding every value of operand ``dtype`` exactly."""
    import torch

    return torch.float16 if dtype == "fp16" else torch.bfloat16


def random_values(
    shape: tuple[int, int], dtype: str, *, seed: int, device: str = "cpu"
) -> torch.Tensor:
    """fp32 tensor of ``shape`` whose values are exactly representable in ``dtype``."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(seed)
    if dtype == "int8":
        return torch.randint(-127, 128, shape, generator=g, device=device).float()
    if dtype == "fp4":
        grid = torch.tensor(_FP4_VALUES, device=device)
        idx = torch.randint(0, len(_FP4_VALUES), shape, generator=g, device=device)
        sign = torch.randint(0, 2, shape, generator=g, device=device).float() * 2 - 1
        return grid[idx] * sign
    x = torch.randn(shape, generator=g, device=device)
    if dtype == "fp8":
        # Scale so values use a good part of E4M3's range (max 448) without overflowing.
        return (x * 4).clamp(-448, 448).to(torch.float8_e4m3fn).float()
    if dtype in ("fp16", "bf16"):
        return x.to(torch_dtype(dtype)).float()
    raise KeyError(f"unknown operand dtype {dtype!r}")


def pruned_weight(N: int, K: int, dtype: str, pattern, *, seed: int, device: str = "cpu"):
    """A random [N, K] weight (fp32 values exact in ``dtype``) pruned to ``pattern``.

    ``dense`` and ``2_inf`` keep every value: 2_inf is the dense weight run through the
    slide path (docs/method.md, "Patterns").
    """
    from slidesparse.core import sparsity

    w = random_values((N, K), dtype, seed=seed, device=device)
    if pattern.is_dense or pattern.is_inf:
        return w
    return sparsity.prune(w, pattern, method="magnitude")


def lift(x, pattern, K_slide: int | None = None):
    """Activation ``x[M, K]`` lifted to ``[M, K_slide]`` on x's device (one gather)."""
    from slidesparse.core import sparsity

    out = sparsity.lift_activation(x, pattern)
    if K_slide is not None and out.shape[-1] != K_slide:
        raise ValueError(f"lifted activation has {out.shape[-1]} columns, expected {K_slide}")
    return out


def check_rows(M: int, limit: int = 256) -> list[int]:
    """Row indices checked against the reference: all of them up to ``limit``, else an even
    spread that always includes the first and the last (padding bugs live at the edges)."""
    if limit >= M:
        return list(range(M))
    step = (M - 1) / (limit - 1)
    return sorted({round(i * step) for i in range(limit)})


def reference(x_values, w_values, rows: list[int]):
    """fp64 ``(x[rows] · wᵀ, |x[rows]| · |w|ᵀ)`` of the dense (pruned, unslid) operands.

    The first is the ground truth; the second scales the accumulation-error allowance.
    """
    import torch

    r = torch.tensor(rows, device=x_values.device)
    x = x_values.index_select(0, r).double()
    w = w_values.double()
    return x @ w.T, x.abs() @ w.abs().T


def compare(
    out, ref, rows: list[int], out_dtype: str, abs_ref=None, acc_eps: float = 0.0
) -> tuple[bool, float]:
    """(correct, max_abs_err) of ``out[rows]`` against the fp64 reference ``ref``.

    An element passes when ``|out - ref| <= rtol·(|ref| + mean|ref|) + acc_eps·abs_ref``:
    the output rounding relative to its own size (the mean as a floor, so near-zero sums are
    not judged by a relative error of an absolute rounding) plus the accumulation allowance.
    """
    import torch

    r = torch.tensor(rows, device=out.device)
    got = out.index_select(0, r).double().to(ref.device)
    if got.shape != ref.shape:
        return False, float("inf")
    if not torch.isfinite(got).all():
        return False, float("inf")
    err = (got - ref).abs()
    max_err = float(err.max()) if err.numel() else 0.0
    rtol = _RTOL[out_dtype]
    bound = rtol * (ref.abs() + ref.abs().mean())
    if abs_ref is not None and acc_eps:
        bound = bound + acc_eps * abs_ref
    return bool((err <= bound).all()), max_err


# Worker-lifetime operand caches (a task context's memo), so cells of one shape share them.
MEMO_WEIGHTS = 8  # prepared weights kept (LRU): a model's 4 layers x 2 patterns
_MEMO_INPUTS = 2


def _lru(memo: dict, name: str, limit: int) -> OrderedDict:
    d = memo.get(name)
    if not isinstance(d, OrderedDict):
        d = memo[name] = OrderedDict()
    # Make room first: a GPU may not hold the old and the new large operands together.
    while len(d) >= limit:
        d.popitem(last=False)
    return d


def cached_weight(memo, device, backend, spec_name, dtype, out_dtype, pattern, N, K, seed):
    """(w_values, prepared) for the shape, from ``memo`` or made now (pruned, slid, prepared
    by ``backend``); ``w_values`` is kept compact for the reference check."""
    cache = memo.get("kernel-gemm.weights")
    key = (spec_name, dtype, out_dtype, pattern.name, N, K, seed, device)
    if isinstance(cache, OrderedDict) and key in cache:
        cache.move_to_end(key)
        return cache[key]
    cache = _lru(memo, "kernel-gemm.weights", MEMO_WEIGHTS)
    w_values = pruned_weight(N, K, dtype, pattern, seed=seed, device=device)
    prepared = backend.prepare_weight(w_values, pattern, dtype, out_dtype)
    # Half the memory: every operand value is exact in bf16 (INT8 integers, E4M3, E2M1) or
    # in fp16/bf16 themselves.
    cache[key] = (w_values.to(compact_dtype(dtype)), prepared)
    return cache[key]


def cached_activation(memo, device, dtype, M, K, seed):
    """``x_values[M, K]`` for the shape, from ``memo`` or made now."""
    cache = memo.get("kernel-gemm.inputs")
    key = (dtype, M, K, seed, device)
    if not (isinstance(cache, OrderedDict) and key in cache):
        cache = _lru(memo, "kernel-gemm.inputs", _MEMO_INPUTS)
        cache[key] = random_values((M, K), dtype, seed=seed + 1, device=device)
    return cache[key]
