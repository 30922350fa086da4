"""Torch reference of the three kernels: the oracle the tests compare against bit for bit.

Plain torch ops on any device, following :mod:`slidesparse.kernels.numerics` step by step;
``quant_slide`` is literally "lift with :func:`slidesparse.core.sparsity.lift_activation`, then
quantize". Slow and memory-hungry (fp32 temporaries): for tests, not for benchmarks.
"""

from __future__ import annotations

import torch

from slidesparse.core import sparsity
from slidesparse.kernels import numerics


def _quantize_rows(x: torch.Tensor, amax: torch.Tensor, out_name: str, M_pad: int, K_out: int):
    """Quantize fp32 rows ``x`` [M, K'] with row maxima ``amax`` [M]; pad to [M_pad, K_out]."""
    qmax = numerics.QMAX[out_name]
    a = amax.clamp_min(numerics.AMAX_FLOOR)
    # Tensor / tensor on purpose: CUDA torch divides by a Python scalar as a multiply by its
    # reciprocal, which is not the correctly rounded quotient the kernels compute.
    qmax_t = torch.full_like(a, qmax)
    scale = a / qmax_t
    inv = qmax_t / a
    y = x * inv[:, None]
    # Rows with an inf or NaN (inv == 0) store +0 everywhere (no -0 from x * 0).
    y = torch.where((inv == 0)[:, None], torch.zeros_like(y), y).clamp(-qmax, qmax)
    # torch.round rounds half to even; the fp8 cast rounds to nearest even.
    q = torch.round(y).to(torch.int8) if out_name == "int8" else y.to(torch.float8_e4m3fn)
    M, K = x.shape
    q_pad = torch.zeros((M_pad, K_out), dtype=q.dtype, device=x.device)
    q_pad[:M, :K] = q
    scale_pad = torch.ones((M_pad,), dtype=torch.float32, device=x.device)
    scale_pad[:M] = scale
    return q_pad, scale_pad


def row_amax(x: torch.Tensor) -> torch.Tensor:
    """Per-row max |x| in fp32, NaN counted as +inf (so the row stores zeros, scale inf)."""
    a = x.float().abs()
    a = torch.where(torch.isnan(a), torch.full_like(a, float("inf")), a)
    return a.amax(dim=1)


def quant_only_ref(x: torch.Tensor, out_dtype="int8"):
    """Reference ``quant_only``: ``(q [M_pad, K_pad], scale [M_pad])``."""
    out_name = numerics.dtype_name(out_dtype)
    M, K = x.shape
    return _quantize_rows(
        x.float(),
        row_amax(x),
        out_name,
        numerics.ceil_to(M, numerics.M_ALIGN),
        numerics.ceil_to(K, numerics.K_ALIGN),
    )


def quant_slide_ref(x: torch.Tensor, pattern, out_dtype="int8"):
    """Reference ``quant_slide``: lift the activation, then quantize with the original rows' max."""
    out_name = numerics.dtype_name(out_dtype)
    M, K = x.shape
    lifted = sparsity.lift_activation(x, pattern).float()
    return _quantize_rows(
        lifted,
        row_amax(x),
        out_name,
        numerics.ceil_to(M, numerics.M_ALIGN),
        sparsity.k_slide(K, pattern),
    )


def dequant_bias_ref(acc, scale_a, scale_b, bias=None, out_dtype="bf16"):
    """Reference ``dequant_bias``: ``((acc * scale_a) * scale_b) + bias`` in fp32, then cast."""
    y = (acc.float() * scale_a.float()[:, None]) * scale_b.float()[None, :]
    if bias is not None:
        y = y + bias.float()[None, :]
    return y.to(numerics.torch_dtype(numerics.dtype_name(out_dtype)))
