"""``quant_slide``: per-token quantization fused with SlideSparse activation lifting.

x [M, K] bf16 | fp16 | fp32  ->  q [M_pad, K_slide] int8 | fp8 e4m3,  scale [M_pad] fp32
with K_slide = :func:`slidesparse.core.sparsity.k_slide` and q[m, j] = quant(x[m, in(j)]),
in(j) = g·L + 2w + lane (g = j div (2L-4), w = (j mod (2L-4)) div 4, lane = j mod 4);
``2_inf`` uses in(j) = 2·(j div 4) + j mod 4. Slots with in(j) >= K hold zeros. The scale
comes from the original row (duplicated values cannot change a maximum), so q equals
``quant_only`` applied to the lifted activation, bit for bit.

Two kernels, picked by the tuned config: the window kernel (``BLOCK``) computes in(j) per
lifted window and handles every pattern; the group kernel (``GROUPS``, finite L) loads
source groups contiguously, quantizes each value once and writes window w of a group as
bytes 2w..2w+3 of the packed group (a constant shift), so it has no index division at all.
"""

from __future__ import annotations

import triton
import triton.language as tl

from slidesparse.core.errors import UserError
from slidesparse.kernels import numerics, tuning
from slidesparse.kernels.quant import check_activation
from slidesparse.kernels.rounding import abs_max_bits, quantize, scale_and_inv


@triton.jit
def _window_start(v, NW: tl.constexpr, GROUP: tl.constexpr):
    """First source column of window ``v``: windows of a group start 2 apart, groups GROUP
    (= L) apart; NW == 0 is 2_inf, one unbroken run of windows."""
    if NW == 0:
        start = v * 2
    else:
        g = v // NW
        start = g * GROUP + (v - g * NW) * 2
    return start


@triton.jit
def _tile_rows(x_ptr, q_ptr, M, stride_xm, stride_qm, ROWS: tl.constexpr):
    """This program's rows [ROWS], their validity and x / q row pointers, all [ROWS, 1, 1].

    Offsets are 64-bit: M · K_slide may pass 2^31. The grid covers M_pad exactly.
    """
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    rows64 = rows.to(tl.int64)[:, None, None]
    return rows, (rows < M)[:, None, None], x_ptr + rows64 * stride_xm, q_ptr + rows64 * stride_qm


@triton.jit
def _two_pass_amax(x_ptr, rows, M, K, stride_xm, ROWS: tl.constexpr, STEP: tl.constexpr):
    """|max| bits of each row of x, STEP columns at a time (kept in L2 for the lift)."""
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm  # [ROWS, 1]
    cols = tl.arange(0, STEP)[None, :]
    amax = tl.zeros([ROWS], dtype=tl.int32)
    for k0 in range(0, K, STEP):
        c = k0 + cols
        x = tl.load(
            x_rows + c, mask=(rows < M)[:, None] & (c < K), other=0.0, eviction_policy="evict_last"
        )
        amax = tl.maximum(amax, abs_max_bits(x.to(tl.float32), 1))
    return amax


@triton.jit
def _quant_slide_kernel(
    # pointers
    x_ptr,
    q_ptr,
    scale_ptr,
    # sizes and strides (elements); row offsets are 64-bit, M * K_slide may pass 2^31
    M,
    K,
    K_slide,
    stride_xm,
    stride_qm,
    # pattern (windows per group, group length) and numerics
    NW: tl.constexpr,
    GROUP: tl.constexpr,
    QMAX: tl.constexpr,
    FP8: tl.constexpr,
    AMAX_FLOOR: tl.constexpr,
    EXACT_CAST: tl.constexpr,
    # tiling: BLOCK lifted columns = BLOCK // 4 windows per step
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
    ONE_PASS: tl.constexpr,
):
    # Tiles are [ROWS, windows, 4 lanes]: the index math runs once per window, the lanes of a
    # window are 4 consecutive inputs, and lifted column 4·v + lane is window v's lane.
    rows, row_ok, x_rows, q_rows = _tile_rows(x_ptr, q_ptr, M, stride_xm, stride_qm, ROWS)
    win = tl.arange(0, BLOCK // 4)[None, :, None]  # [1, BLOCK/4, 1]
    lane = tl.arange(0, 4)[None, None, :]  # [1, 1, 4]
    if ONE_PASS:
        # The lifted row covers every source column, so its maximum is the row's maximum.
        src = _window_start(win, NW, GROUP) + lane
        x = tl.load(x_rows + src, mask=row_ok & (src < K), other=0.0).to(tl.float32)
        amax = tl.max(abs_max_bits(x, 2), axis=1)
        scale, inv = scale_and_inv(amax, AMAX_FLOOR, QMAX)
        q = quantize(x, inv[:, None, None], QMAX, FP8, EXACT_CAST)
        tl.store(q_rows + win * 4 + lane, q, mask=win * 4 < K_slide)
    else:
        amax = _two_pass_amax(x_ptr, rows, M, K, stride_xm, ROWS, BLOCK)
        scale, inv = scale_and_inv(amax, AMAX_FLOOR, QMAX)
        for v0 in range(0, K_slide // 4, BLOCK // 4):
            v = v0 + win
            src = _window_start(v, NW, GROUP) + lane
            x = tl.load(x_rows + src, mask=row_ok & (src < K), other=0.0).to(tl.float32)
            q = quantize(x, inv[:, None, None], QMAX, FP8, EXACT_CAST)
            tl.store(q_rows + v * 4 + lane, q, mask=v * 4 < K_slide)
    tl.store(scale_ptr + rows, tl.where(rows < M, scale, 1.0))


@triton.jit
def _pack_group(b, lane, LANE0: tl.constexpr):
    """Bytes ``b`` [ROWS, G, LP] uint64 of lanes LANE0..LANE0+7 packed little-endian: [ROWS, G]."""
    keep = (lane >= LANE0) & (lane < LANE0 + 8)
    return tl.sum(tl.where(keep, b << ((lane - LANE0) * 8 & 63).to(tl.uint64), 0), axis=2)


@triton.jit
def _window_words(lo, hi, w, LP: tl.constexpr):
    """Window ``w`` of a group (its bytes 2w..2w+3, one uint32) from the packed group.

    ``lo``/``hi`` hold group bytes 0-7 / 8-15; shifts stay below 64 (larger ones are
    undefined), and only window 3 of a 16-byte group straddles the two words."""
    s = (w * 16).to(tl.uint64)
    if LP <= 8:
        word = lo >> s
    else:
        from_lo = lo >> tl.minimum(s, 48)
        from_hi = hi >> tl.maximum(s, 64) - 64
        word = tl.where(s < 64, from_lo, from_hi)
        word = tl.where(s == 48, from_lo | (hi << 16), word)
    return word.to(tl.uint32).to(tl.int32, bitcast=True)


@triton.jit
def _lift_tile(
    x,
    inv,
    q_rows,
    rows,
    g0,
    n_words,
    stride_q32m,
    q32_ptr,
    LP: tl.constexpr,
    NW: tl.constexpr,
    NWP: tl.constexpr,
    QMAX: tl.constexpr,
    FP8: tl.constexpr,
    EXACT_CAST: tl.constexpr,
    GROUPS: tl.constexpr,
    SPLIT: tl.constexpr,
):
    """Quantize source groups ``x`` [ROWS, GROUPS, LP] (fp32, groups g0.. of the rows) once and
    store their lifted windows: window w of group g is word g·NW + w of the int32 row."""
    lane = tl.arange(0, LP)[None, None, :]
    q = quantize(x, inv, QMAX, FP8, EXACT_CAST)
    b = q.to(tl.uint8, bitcast=True).to(tl.uint64)  # lanes past the group hold zeros
    lo = _pack_group(b, lane, 0)
    hi = lo
    if LP > 8:
        hi = _pack_group(b, lane, 8)
    if SPLIT:
        # One [ROWS, GROUPS] store per window slot; every shift is a constant.
        g = g0 + tl.arange(0, GROUPS)[None, :]
        q_rows2 = q32_ptr + rows.to(tl.int64)[:, None] * stride_q32m
        for w in tl.static_range(NW):
            word = _window_words(lo, hi, tl.full([1, 1], w, tl.int32), LP)
            tl.store(q_rows2 + g * NW + w, word, mask=g * NW + w < n_words)
    else:
        g = g0 + tl.arange(0, GROUPS)[None, :, None]
        w = tl.arange(0, NWP)[None, None, :]
        word = _window_words(lo[:, :, None], hi[:, :, None], w, LP)
        idx = g * NW + w
        tl.store(q_rows + idx, word, mask=(w < NW) & (idx < n_words))


@triton.jit
def _quant_slide_groups_kernel(
    # pointers (q32_ptr: the output viewed as int32, one lifted window per element)
    x_ptr,
    q32_ptr,
    scale_ptr,
    # sizes and strides (x: elements, q32: windows); row offsets are 64-bit
    M,
    K,
    n_words,
    stride_xm,
    stride_q32m,
    # pattern: group length, its power-of-two ceiling, windows per group (and its ceiling)
    GROUP: tl.constexpr,
    LP: tl.constexpr,
    NW: tl.constexpr,
    NWP: tl.constexpr,
    # numerics
    QMAX: tl.constexpr,
    FP8: tl.constexpr,
    AMAX_FLOOR: tl.constexpr,
    EXACT_CAST: tl.constexpr,
    # tiling: GROUPS source groups per step; SPLIT stores each window slot on its own
    ROWS: tl.constexpr,
    GROUPS: tl.constexpr,
    ONE_PASS: tl.constexpr,
    SPLIT: tl.constexpr,
):
    # Source tiles are [ROWS, GROUPS, LP]: contiguous loads, each value quantized once. A
    # group's bytes are packed into two uint64, and window w of the group is bytes 2w..2w+3,
    # i.e. a constant shift: the lifted row is written as whole 4-byte windows, no gather and
    # no division by the window count.
    rows, row_ok, x_rows, q_rows = _tile_rows(x_ptr, q32_ptr, M, stride_xm, stride_q32m, ROWS)
    grp = tl.arange(0, GROUPS)[None, :, None]  # [1, GROUPS, 1]
    lane = tl.arange(0, LP)[None, None, :]  # [1, 1, LP]
    in_group = lane < GROUP
    if ONE_PASS:
        src = grp * GROUP + lane
        x = tl.load(x_rows + src, mask=row_ok & in_group & (src < K), other=0.0).to(tl.float32)
        amax = tl.max(abs_max_bits(x, 2), axis=1)
    else:
        amax = _two_pass_amax(x_ptr, rows, M, K, stride_xm, ROWS, GROUPS * LP)
    scale, inv = scale_and_inv(amax, AMAX_FLOOR, QMAX)
    inv = inv[:, None, None]
    # One pass: the single step lifts the tile loaded above; else each step loads its groups.
    for g0 in range(0, tl.cdiv(n_words, NW), GROUPS):
        if not ONE_PASS:
            src = (g0 + grp) * GROUP + lane
            x = tl.load(
                x_rows + src,
                mask=row_ok & in_group & (src < K),
                other=0.0,
                eviction_policy="evict_first",
            ).to(tl.float32)
        _lift_tile(
            x,
            inv,
            q_rows,
            rows,
            g0,
            n_words,
            stride_q32m,
            q32_ptr,
            LP,
            NW,
            NWP,
            QMAX,
            FP8,
            EXACT_CAST,
            GROUPS,
            SPLIT,
        )
    tl.store(scale_ptr + rows, tl.where(rows < M, scale, 1.0))


def launch_quant_slide(x, q, scale, L: int, config: dict) -> None:
    """Launch the kernel on preallocated outputs.

    x: [M, K] bf16/fp16/fp32, unit stride along K. q: [M_pad, K_slide] int8 or
    float8_e4m3fn, unit stride along K, K_slide a multiple of 4. scale: [M_pad] fp32,
    contiguous. L: group length (4..16, even), 0 for 2_inf. config: ``ROWS`` (divides 16),
    ``num_warps``, and either ``GROUPS`` (power of two, source groups per step) with
    ``SPLIT`` (0/1) for the group kernel (finite L only), or ``BLOCK`` (power of two >= 4,
    lifted columns per step) for the window kernel.
    """
    M, K = x.shape
    M_pad, K_slide = q.shape
    fp8 = numerics.dtype_name(q.dtype) == "fp8"
    qmax = numerics.QMAX["fp8" if fp8 else "int8"]
    rows = config["ROWS"]
    if "GROUPS" in config:
        if not L:
            raise UserError("quant_slide: GROUPS configs need a finite L; use a BLOCK config")
        import torch

        q32 = q.view(torch.int32)  # [M_pad, K_slide / 4]: one lifted window per element
        nw, groups = L // 2 - 1, config["GROUPS"]
        lp = 1 << (L - 1).bit_length()
        _quant_slide_groups_kernel[(M_pad // rows,)](
            x,
            q32,
            scale,
            M,
            K,
            q32.shape[1],
            x.stride(0),
            q32.stride(0),
            GROUP=L,
            LP=lp,
            NW=nw,
            NWP=1 << (nw - 1).bit_length(),
            QMAX=qmax,
            FP8=fp8,
            AMAX_FLOOR=numerics.AMAX_FLOOR,
            EXACT_CAST=numerics.interpreting(),
            ROWS=rows,
            GROUPS=groups,
            ONE_PASS=groups * nw >= q32.shape[1],
            SPLIT=bool(config["SPLIT"]),
            num_warps=config["num_warps"],
            enable_fp_fusion=False,
        )
        return
    block = config["BLOCK"]
    _quant_slide_kernel[(M_pad // rows,)](
        x,
        q,
        scale,
        M,
        K,
        K_slide,
        x.stride(0),
        q.stride(0),
        NW=L // 2 - 1 if L else 0,
        GROUP=L,
        QMAX=qmax,
        FP8=fp8,
        AMAX_FLOOR=numerics.AMAX_FLOOR,
        EXACT_CAST=numerics.interpreting(),
        ROWS=rows,
        BLOCK=block,
        ONE_PASS=block >= K_slide,
        num_warps=config["num_warps"],
        enable_fp_fusion=False,  # keep every multiply and add rounded on its own, as torch does
    )


def quant_slide(x, pattern, out_dtype="int8", *, config: dict | None = None):
    """Quantize and lift ``x`` [M, K]: returns ``(q [M_pad, K_slide], scale [M_pad] fp32)``.

    ``pattern`` is a sparse pattern ("2_8", "6:8", "2_inf"); ``out_dtype`` "int8" / "fp8"
    or the torch dtype; ``config`` overrides the tuned one.
    """
    import torch

    from slidesparse.core import sparsity

    p = sparsity.parse_pattern(pattern)
    if p.is_dense:
        raise UserError("quant_slide: pattern 'dense' has no lifting; use quant_only")
    in_name, out_name = check_activation("quant_slide", x, out_dtype)
    M, K = x.shape
    M_pad = numerics.ceil_to(M, numerics.M_ALIGN)
    K_slide = sparsity.k_slide(K, p)
    q = torch.empty((M_pad, K_slide), dtype=numerics.torch_dtype(out_name), device=x.device)
    scale = torch.empty((M_pad,), dtype=torch.float32, device=x.device)
    if config is None:
        config = tuning.config_for(f"quant_slide_{p.name}", f"{in_name}->{out_name}", K, M)
    launch_quant_slide(x, q, scale, p.L or 0, config)
    return q, scale
