"""``quant_only``: per-token symmetric quantization of an activation (the dense path).

x [M, K] bf16 | fp16 | fp32  ->  q [M_pad, K_pad] int8 | fp8 e4m3,  scale [M_pad] fp32
with M_pad = ceil16(M), K_pad = ceil32(K); numerics in :mod:`slidesparse.kernels.numerics`.
One program quantizes ROWS rows: either the whole padded row sits in registers (ONE_PASS),
or a first sweep finds the row maximum and a second re-reads the row (from L2) to quantize.
"""

from __future__ import annotations

import triton
import triton.language as tl

from slidesparse.core.errors import UserError
from slidesparse.kernels import numerics, tuning
from slidesparse.kernels.rounding import abs_max_bits, quantize, scale_and_inv


@triton.jit
def _quant_only_kernel(
    # pointers
    x_ptr,
    q_ptr,
    scale_ptr,
    # sizes and strides (elements); row offsets are 64-bit, M * K may pass 2^31
    M,
    K,
    K_pad,
    stride_xm,
    stride_qm,
    # numerics
    QMAX: tl.constexpr,
    FP8: tl.constexpr,
    AMAX_FLOOR: tl.constexpr,
    # tiling
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
    ONE_PASS: tl.constexpr,
    EXACT_CAST: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # [ROWS]; the grid covers M_pad exactly
    row_ok = (rows < M)[:, None]
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm  # [ROWS, 1]
    q_rows = q_ptr + rows.to(tl.int64)[:, None] * stride_qm
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    if ONE_PASS:
        x = tl.load(x_rows + cols, mask=row_ok & (cols < K), other=0.0).to(tl.float32)
        scale, inv = scale_and_inv(abs_max_bits(x, 1), AMAX_FLOOR, QMAX)
        tl.store(q_rows + cols, quantize(x, inv[:, None], QMAX, FP8, EXACT_CAST), mask=cols < K_pad)
    else:
        amax = tl.zeros([ROWS], dtype=tl.int32)
        for k0 in range(0, K, BLOCK):
            c = k0 + cols
            # Keep the row in L2 for the second sweep.
            x = tl.load(x_rows + c, mask=row_ok & (c < K), other=0.0, eviction_policy="evict_last")
            amax = tl.maximum(amax, abs_max_bits(x.to(tl.float32), 1))
        scale, inv = scale_and_inv(amax, AMAX_FLOOR, QMAX)
        for k0 in range(0, K_pad, BLOCK):
            c = k0 + cols
            x = tl.load(x_rows + c, mask=row_ok & (c < K), other=0.0, eviction_policy="evict_first")
            tl.store(
                q_rows + c,
                quantize(x.to(tl.float32), inv[:, None], QMAX, FP8, EXACT_CAST),
                mask=c < K_pad,
            )
    # Padded rows dequantize to zero whatever their scale; 1 keeps them finite.
    tl.store(scale_ptr + rows, tl.where(rows < M, scale, 1.0))


def launch_quant_only(x, q, scale, config: dict) -> None:
    """Launch the kernel on preallocated outputs.

    x: [M, K] bf16/fp16/fp32, unit stride along K. q: [M_pad, K_pad] int8 or
    float8_e4m3fn, unit stride along K. scale: [M_pad] fp32, contiguous.
    config: ``ROWS`` (divides 16), ``BLOCK`` (power of two, columns per step), ``num_warps``.
    """
    M, K = x.shape
    M_pad, K_pad = q.shape
    fp8 = numerics.dtype_name(q.dtype) == "fp8"
    rows, block = config["ROWS"], config["BLOCK"]
    _quant_only_kernel[(M_pad // rows,)](
        x,
        q,
        scale,
        M,
        K,
        K_pad,
        x.stride(0),
        q.stride(0),
        QMAX=numerics.QMAX["fp8" if fp8 else "int8"],
        FP8=fp8,
        AMAX_FLOOR=numerics.AMAX_FLOOR,
        ROWS=rows,
        BLOCK=block,
        ONE_PASS=block >= K_pad,
        EXACT_CAST=numerics.interpreting(),
        num_warps=config["num_warps"],
        enable_fp_fusion=False,  # keep every multiply and add rounded on its own, as torch does
    )


def check_activation(fn: str, x, out_dtype) -> tuple[str, str]:
    """Validate an activation for the quant kernels; returns (in dtype, out dtype) names."""
    if x.dim() != 2:
        raise UserError(f"{fn}: x must be 2-D [M, K], got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise UserError(f"{fn}: x is empty (shape {tuple(x.shape)}); pass M >= 1 and K >= 1")
    if x.stride(1) != 1:
        raise UserError(f"{fn}: x must have unit stride along K; call .contiguous() first")
    in_name = numerics.check_dtype(numerics.dtype_name(x.dtype), numerics.IN_DTYPES, f"{fn} input")
    out_name = numerics.check_dtype(
        numerics.dtype_name(out_dtype), numerics.QUANT_DTYPES, f"{fn} output"
    )
    numerics.check_device(fn, x)
    return in_name, out_name


def quant_only(x, out_dtype="int8", *, config: dict | None = None):
    """Quantize ``x`` [M, K] per token: returns ``(q [M_pad, K_pad], scale [M_pad] fp32)``.

    ``out_dtype`` is "int8" / "fp8" or the torch dtype; ``config`` overrides the tuned one.
    """
    import torch

    in_name, out_name = check_activation("quant_only", x, out_dtype)
    M, K = x.shape
    M_pad = numerics.ceil_to(M, numerics.M_ALIGN)
    K_pad = numerics.ceil_to(K, numerics.K_ALIGN)
    q = torch.empty((M_pad, K_pad), dtype=numerics.torch_dtype(out_name), device=x.device)
    scale = torch.empty((M_pad,), dtype=torch.float32, device=x.device)
    if config is None:
        config = tuning.config_for("quant_only", f"{in_name}->{out_name}", K, M)
    launch_quant_only(x, q, scale, config)
    return q, scale
