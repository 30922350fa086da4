"""Fused Triton kernels for the engine's memory-bound steps (GPU path).

Eager torch spends ~8 kernels on an RMSNorm (fp32 copy, square, mean, rsqrt, two multiplies,
two casts), ~7 on RoPE and 3 on SiLU-and-mul, each a full pass over the activation. At decode
every kernel costs a few µs of launch even inside a CUDA graph, and at prefill every pass
moves the whole [M, hidden] activation. These kernels do each step in one pass:

* :func:`add_rmsnorm`: ``h = x + d`` (the residual add, bf16) and ``y = w · bf16(h / rms(h))``;
* :func:`rope_`: rotates q and k inside the fused qkv output, in place, at positions
  ``pos0 + s``, and optionally writes the rotated k and v into the static KV cache;
* :func:`silu_mul`: ``bf16(silu(gate)) · up`` of the fused gate_up output;
* :func:`dequant_silu_mul`: the same straight from the quantized gate_up GEMM's accumulator,
  folding the dequant in (the gate_up linear's epilogue on the quantized backends).

Every intermediate is rounded to bf16 where Hugging Face's eager code rounds it (with
:func:`slidesparse.kernels.rounding.rne_bf16`, so the interpreter rounds as the GPU does); the
results differ from eager torch only by the order of the RMS sum. The CPU engine keeps the
eager ops (bitwise equal to HF); these kernels run there only under Triton's interpreter, in
the tests that check them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from slidesparse.kernels.rounding import rne_bf16


@triton.jit
def _add_rmsnorm_kernel(
    x_ptr, d_ptr, w_ptr, h_ptr, y_ptr, N, eps, HAS_D: tl.constexpr, BLOCK: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    m = cols < N
    x = tl.load(x_ptr + row * N + cols, mask=m, other=0.0).to(tl.float32)
    if HAS_D:
        d = tl.load(d_ptr + row * N + cols, mask=m, other=0.0).to(tl.float32)
        hb = rne_bf16(x + d)  # the residual stream is bf16
        tl.store(h_ptr + row * N + cols, hb, mask=m)
        x = hb.to(tl.float32)
    var = tl.sum(x * x, axis=0) / N
    r = tl.math.rsqrt(var + eps)
    n = rne_bf16(x * r).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * N + cols, rne_bf16(w * n), mask=m)


def add_rmsnorm(x: torch.Tensor, d: torch.Tensor | None, w: torch.Tensor, eps: float):
    """(h, y): h = x + d (x itself when d is None), y = RMSNorm(h) · w; [..., N] bf16."""
    N = x.shape[-1]
    x2 = x.reshape(-1, N)
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    M = x2.shape[0]
    y = torch.empty_like(x2)
    if d is None:
        h = x2
        d2 = x2
    else:
        d2 = d.reshape(-1, N)
        if not d2.is_contiguous():
            d2 = d2.contiguous()
        h = torch.empty_like(x2)
    block = triton.next_power_of_2(N)
    warps = 4 if block <= 2048 else (8 if block <= 8192 else 16)
    _add_rmsnorm_kernel[(M,)](
        x2, d2, w, h, y, N, eps, HAS_D=d is not None, BLOCK=block, num_warps=warps
    )
    return h.view(x.shape), y.view(x.shape)


@triton.jit
def _rope_kernel(
    qkv_ptr,
    cos_ptr,
    sin_ptr,
    pos_ptr,
    kc_ptr,
    vc_ptr,
    S,
    stride_row,
    c_sb,
    c_sh,
    c_st,
    NQ: tl.constexpr,
    NKV: tl.constexpr,
    HALF: tl.constexpr,
    NHP: tl.constexpr,
    KVP: tl.constexpr,
    HAS_CACHE: tl.constexpr,
):
    r = tl.program_id(0)
    b = r // S
    s = r % S
    pos = (tl.load(pos_ptr) + s).to(tl.int64)
    D: tl.constexpr = 2 * HALF
    heads = tl.arange(0, NHP)[:, None]  # q heads then k heads
    dd = tl.arange(0, HALF)[None, :]
    hm = (heads < NQ + NKV) & (dd < HALF)
    base = qkv_ptr + r.to(tl.int64) * stride_row + heads * D
    x1 = tl.load(base + dd, mask=hm, other=0.0).to(tl.float32)
    x2 = tl.load(base + HALF + dd, mask=hm, other=0.0).to(tl.float32)
    c1 = tl.load(cos_ptr + pos * D + dd).to(tl.float32)
    c2 = tl.load(cos_ptr + pos * D + HALF + dd).to(tl.float32)
    s1 = tl.load(sin_ptr + pos * D + dd).to(tl.float32)
    s2 = tl.load(sin_ptr + pos * D + HALF + dd).to(tl.float32)
    # HF: bf16(x·cos) + bf16(rotate_half(x)·sin), each product and the sum rounded to bf16
    o1 = rne_bf16(rne_bf16(x1 * c1).to(tl.float32) + rne_bf16(-x2 * s1).to(tl.float32))
    o2 = rne_bf16(rne_bf16(x2 * c2).to(tl.float32) + rne_bf16(x1 * s2).to(tl.float32))
    tl.store(base + dd, o1, mask=hm)
    tl.store(base + HALF + dd, o2, mask=hm)
    if HAS_CACHE:
        km = hm & (heads >= NQ)
        kb = kc_ptr + b.to(tl.int64) * c_sb + (heads - NQ) * c_sh + pos * c_st
        tl.store(kb + dd, o1, mask=km)
        tl.store(kb + HALF + dd, o2, mask=km)
        vh = tl.arange(0, KVP)[:, None]
        vd = tl.arange(0, D)[None, :]
        vm = (vh < NKV) & (vd < D)
        v = tl.load(qkv_ptr + r.to(tl.int64) * stride_row + (NQ + NKV) * D + vh * D + vd, mask=vm)
        tl.store(vc_ptr + b.to(tl.int64) * c_sb + vh * c_sh + pos * c_st + vd, v, mask=vm)


def rope_(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    pos0: torch.Tensor,
    S: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    cache=None,
) -> None:
    """Rotate q and k of ``qkv`` [B·S, (H + 2·KV)·D] in place at positions ``pos0 + s``.

    cos / sin: the full tables [T_max, D]; pos0: [1] int64 on the device (decode: the current
    position; prefill: 0). With ``cache`` (k, v buffers [B', KV, T, D], B' >= B) the rotated k
    and the v of row b·S + s land at [b, :, pos0 + s]."""
    M = qkv.shape[0]
    half = head_dim // 2
    assert qkv.stride(-1) == 1 and half == triton.next_power_of_2(half)
    if cache is not None:
        kc, vc = cache
        assert kc.stride() == vc.stride() and kc.stride(-1) == 1
        strides = kc.stride()[:3]
    else:
        kc = vc = qkv
        strides = (0, 0, 0)
    _rope_kernel[(M,)](
        qkv,
        cos,
        sin,
        pos0,
        kc,
        vc,
        S,
        qkv.stride(0),
        *strides,
        NQ=heads,
        NKV=kv_heads,
        HALF=half,
        NHP=triton.next_power_of_2(heads + kv_heads),
        KVP=triton.next_power_of_2(kv_heads),
        HAS_CACHE=cache is not None,
        num_warps=4,
    )


@triton.jit
def _silu_mul_kernel(x_ptr, y_ptr, inter, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < inter
    g = tl.load(x_ptr + row * 2 * inter + cols, mask=m, other=0.0).to(tl.float32)
    u = tl.load(x_ptr + row * 2 * inter + inter + cols, mask=m, other=0.0).to(tl.float32)
    s = rne_bf16(g / (1.0 + tl.exp(-g))).to(tl.float32)  # F.silu in bf16
    tl.store(y_ptr + row * inter + cols, rne_bf16(s * u), mask=m)


def silu_mul(x: torch.Tensor) -> torch.Tensor:
    """x [..., 2·I] (gate | up) -> bf16(silu(gate)) · up [..., I]."""
    inter = x.shape[-1] // 2
    x2 = x.reshape(-1, 2 * inter)
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    y = torch.empty((x2.shape[0], inter), dtype=x.dtype, device=x.device)
    block = min(1024, triton.next_power_of_2(inter))
    _silu_mul_kernel[(x2.shape[0], triton.cdiv(inter, block))](
        x2, y, inter, BLOCK=block, num_warps=4
    )
    return y.view(*x.shape[:-1], inter)


@triton.jit
def _dequant_silu_mul_kernel(acc_ptr, sa_ptr, sb_ptr, y_ptr, inter, stride_am, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < inter
    sa = tl.load(sa_ptr + row)
    g = tl.load(acc_ptr + row * stride_am + cols, mask=m, other=0).to(tl.float32)
    u = tl.load(acc_ptr + row * stride_am + inter + cols, mask=m, other=0).to(tl.float32)
    sbg = tl.load(sb_ptr + cols, mask=m, other=0.0)
    sbu = tl.load(sb_ptr + inter + cols, mask=m, other=0.0)
    # dequant_bias's arithmetic, ((acc · scale_a) · scale_b) rounded to bf16, then silu_mul's
    gb = rne_bf16((g * sa) * sbg).to(tl.float32)
    ub = rne_bf16((u * sa) * sbu).to(tl.float32)
    s = rne_bf16(gb / (1.0 + tl.exp(-gb))).to(tl.float32)
    tl.store(y_ptr + row * inter + cols, rne_bf16(s * ub), mask=m)


def dequant_silu_mul(
    acc: torch.Tensor, scale_a: torch.Tensor, w_scale: torch.Tensor, M: int
) -> torch.Tensor:
    """The gate_up GEMM accumulator [M_pad, 2·I] (int32 or bf16) -> bf16 [M, I] in one pass:
    dequant (per-row ``scale_a``, per-column ``w_scale``, no bias) and SiLU-and-mul, with
    the roundings of ``dequant_bias`` followed by :func:`silu_mul`. Saves writing and
    re-reading the bf16 gate_up activation."""
    inter = acc.shape[1] // 2
    assert acc.stride(1) == 1 and scale_a.stride(0) == 1 and w_scale.is_contiguous()
    y = torch.empty((M, inter), dtype=torch.bfloat16, device=acc.device)
    block = min(1024, triton.next_power_of_2(inter))
    _dequant_silu_mul_kernel[(M, triton.cdiv(inter, block))](
        acc, scale_a, w_scale, y, inter, acc.stride(0), BLOCK=block, num_warps=4
    )
    return y


__all__ = ["add_rmsnorm", "dequant_silu_mul", "rope_", "silu_mul"]
