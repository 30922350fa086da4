"""The quant kernels as ``torch.library`` custom ops, with fake implementations.

Registered under the ``slidesparse`` namespace so that ``torch.compile`` treats each kernel as
one opaque node (the fakes give it output shapes without running anything) and CUDA graphs
capture the launch like any other op. Importing this module registers the ops once.
"""

from __future__ import annotations

import torch

from slidesparse.core import sparsity
from slidesparse.kernels import dequant, numerics, quant, slide


@torch.library.custom_op("slidesparse::quant_only", mutates_args=())
def quant_only(x: torch.Tensor, out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token quantization: x [M, K] -> (q [M_pad, K_pad] int8|fp8, scale [M_pad] fp32)."""
    return quant.quant_only(x, out_dtype)


@quant_only.register_fake
def _quant_only_fake(x, out_dtype):
    M, K = x.shape
    M_pad = numerics.ceil_to(M, numerics.M_ALIGN)
    q = x.new_empty((M_pad, numerics.ceil_to(K, numerics.K_ALIGN)), dtype=out_dtype)
    return q, x.new_empty((M_pad,), dtype=torch.float32)


@torch.library.custom_op("slidesparse::quant_slide", mutates_args=())
def quant_slide(
    x: torch.Tensor, pattern: str, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize + lift: x [M, K] -> (q [M_pad, K_slide] int8|fp8, scale [M_pad] fp32)."""
    return slide.quant_slide(x, pattern, out_dtype)


def k_slide_symbolic(K, pattern: str):
    """:func:`slidesparse.core.sparsity.k_slide` in arithmetic a dynamic SymInt ``K`` survives."""
    p = sparsity.parse_pattern(pattern)
    if p.is_inf:
        return numerics.ceil_to(2 * numerics.ceil_to(K, 2), 32)
    return numerics.ceil_to(-(-K // p.L) * (2 * p.L - 4), 32)


@quant_slide.register_fake
def _quant_slide_fake(x, pattern, out_dtype):
    M, K = x.shape
    M_pad = numerics.ceil_to(M, numerics.M_ALIGN)
    q = x.new_empty((M_pad, k_slide_symbolic(K, pattern)), dtype=out_dtype)
    return q, x.new_empty((M_pad,), dtype=torch.float32)


@torch.library.custom_op("slidesparse::dequant_bias", mutates_args=())
def dequant_bias(
    acc: torch.Tensor,
    scale_a: torch.Tensor,
    scale_b: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """acc [M, N] * scale_a[m] * scale_b[n] + bias[n] -> out [M, N] bf16|fp16."""
    return dequant.dequant_bias(acc, scale_a, scale_b, bias, out_dtype)


@dequant_bias.register_fake
def _dequant_bias_fake(acc, scale_a, scale_b, bias, out_dtype):
    return acc.new_empty(acc.shape, dtype=out_dtype)
