"""``dequant_bias``: GEMM accumulator -> activation, out = acc · scale_a[m] · scale_b[n] + bias[n].

acc [M, N] int32 | bf16 | fp32, scale_a [M] or [1] fp32, scale_b [N] or [1] fp32,
bias [N] (any float dtype, optional)  ->  out [M, N] bf16 | fp16.
Math in fp32 as ((acc · scale_a) · scale_b) + bias with each step rounded on its own: the
kernel is launched with ``enable_fp_fusion=False`` so the GPU does not contract the last
multiply and add into an FMA (which would round once and differ from torch in the last bit).
"""

from __future__ import annotations

import triton
import triton.language as tl

from slidesparse.core.errors import UserError
from slidesparse.kernels import numerics, tuning
from slidesparse.kernels.rounding import rne_bf16


@triton.jit
def _dequant_bias_kernel(
    # pointers
    acc_ptr,
    scale_a_ptr,
    scale_b_ptr,
    bias_ptr,
    out_ptr,
    # sizes and strides (elements); a stride of 0 broadcasts a scalar scale
    M,
    N,
    stride_am,
    stride_om,
    stride_sa,
    stride_sb,
    # variants
    HAS_BIAS: tl.constexpr,
    OUT_BF16: tl.constexpr,
    # tiling
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    row_ok = rows < M
    col_ok = cols < N
    mask = row_ok[:, None] & col_ok[None, :]
    rows64 = rows.to(tl.int64)[:, None]  # M * N may pass 2^31
    acc = tl.load(acc_ptr + rows64 * stride_am + cols[None, :], mask=mask, other=0)
    sa = tl.load(scale_a_ptr + rows * stride_sa, mask=row_ok, other=0.0)
    sb = tl.load(scale_b_ptr + cols * stride_sb, mask=col_ok, other=0.0)
    y = (acc.to(tl.float32) * sa[:, None]) * sb[None, :]
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if OUT_BF16:  # noqa: SIM108 - a constexpr branch, compiled out
        out = rne_bf16(y)
    else:
        out = y.to(tl.float16)
    tl.store(out_ptr + rows64 * stride_om + cols[None, :], out, mask=mask)


def launch_dequant_bias(acc, scale_a, scale_b, bias, out, config: dict) -> None:
    """Launch the kernel on a preallocated output.

    acc: [M, N] int32/bf16/fp32, unit stride along N. scale_a: [M] or [1] fp32 contiguous.
    scale_b: [N] or [1] fp32 contiguous. bias: [N] contiguous or None. out: [M, N] bf16 or
    fp16, unit stride along N. config: ``BLOCK_M``, ``BLOCK_N`` (powers of two), ``num_warps``.
    """
    M, N = acc.shape
    bm, bn = config["BLOCK_M"], config["BLOCK_N"]
    _dequant_bias_kernel[(triton.cdiv(M, bm), triton.cdiv(N, bn))](
        acc,
        scale_a,
        scale_b,
        bias if bias is not None else scale_b,
        out,
        M,
        N,
        acc.stride(0),
        out.stride(0),
        0 if scale_a.numel() == 1 else 1,
        0 if scale_b.numel() == 1 else 1,
        HAS_BIAS=bias is not None,
        OUT_BF16=numerics.dtype_name(out.dtype) == "bf16",
        BLOCK_M=bm,
        BLOCK_N=bn,
        num_warps=config["num_warps"],
        enable_fp_fusion=False,
    )


def _check_vector(fn: str, name: str, t, n: int, allow_scalar: bool) -> None:
    ok = t.dim() == 1 and (t.shape[0] == n or (allow_scalar and t.shape[0] == 1))
    if not ok:
        want = f"[{n}] or [1]" if allow_scalar else f"[{n}]"
        raise UserError(f"{fn}: {name} must have shape {want}, got {tuple(t.shape)}")
    if not t.is_contiguous():
        raise UserError(f"{fn}: {name} must be contiguous; call .contiguous() first")


def dequant_bias(acc, scale_a, scale_b, bias=None, out_dtype="bf16", *, config=None):
    """Dequantize a GEMM result: ``acc [M, N] * scale_a[m] * scale_b[n] + bias[n]``.

    ``scale_a`` [M] or [1] and ``scale_b`` [N] or [1] are fp32; ``bias`` [N] is optional;
    ``out_dtype`` "bf16" / "fp16" or the torch dtype; ``config`` overrides the tuned one.
    """
    import torch

    fn = "dequant_bias"
    if acc.dim() != 2 or acc.shape[0] == 0 or acc.shape[1] == 0:
        raise UserError(f"{fn}: acc must be a non-empty 2-D [M, N], got {tuple(acc.shape)}")
    if acc.stride(1) != 1:
        raise UserError(f"{fn}: acc must have unit stride along N; call .contiguous() first")
    acc_name = numerics.check_dtype(
        numerics.dtype_name(acc.dtype), numerics.ACC_DTYPES, f"{fn} acc"
    )
    out_name = numerics.check_dtype(
        numerics.dtype_name(out_dtype), numerics.OUT_DTYPES, f"{fn} output"
    )
    M, N = acc.shape
    for name, t, n in (("scale_a", scale_a, M), ("scale_b", scale_b, N)):
        _check_vector(fn, name, t, n, allow_scalar=True)
        if t.dtype != torch.float32:
            raise UserError(f"{fn}: {name} must be float32, got {t.dtype}; convert with .float()")
    if bias is not None:
        _check_vector(fn, "bias", bias, N, allow_scalar=False)
        if not bias.dtype.is_floating_point:
            raise UserError(f"{fn}: bias must be a float tensor, got {bias.dtype}")
    numerics.check_device(fn, acc, scale_a, scale_b, bias)
    out = torch.empty((M, N), dtype=numerics.torch_dtype(out_name), device=acc.device)
    if config is None:
        config = tuning.config_for("dequant_bias", f"{acc_name}->{out_name}", N, M)
    launch_dequant_bias(acc, scale_a, scale_b, bias, out, config)
    return out
