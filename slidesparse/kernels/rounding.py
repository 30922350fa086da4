"""Triton helpers that round explicitly, so kernels match torch bit for bit everywhere.

Why not plain ``.to(...)`` casts: Triton's interpreter (``TRITON_INTERPRET=1``, which CI uses)
converts fp32 to float8e4nv by looking only at the first dropped bit (ties away from zero, no
sticky bit), ORs a mantissa carry into the exponent field instead of adding it (31.3 becomes
16, not 32) and encodes overflow as NaN; it converts fp32 to bf16 by truncation. On the GPU
the same casts round to nearest even. Rounding in fp32 arithmetic and bit operations first
makes every final cast exact, so both paths store identical bits.

On the GPU only ``rne_bf16`` and ``rne_integer`` stay in the hot path (both a few integer or
float adds); the FP8 cast is native there and hand-rounded only under the interpreter.
Each helper takes and returns fp32 tensors unless it says otherwise.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def rne_integer(y):
    """``y`` (|y| < 2^22) rounded half to even to an integer value, still fp32."""
    # Adding 1.5 * 2^23 leaves no fraction bits, so the add itself rounds half to even.
    return (y + 12582912.0) - 12582912.0


@triton.jit
def rne_e4m3(y):
    """``y`` (|y| <= 448, not NaN) rounded to nearest even on the FP8 E4M3 grid, fp32."""
    bits = y.to(tl.uint32, bitcast=True)
    sign = bits & 0x80000000
    mag = bits & 0x7FFFFFFF
    # Normal range: keep 3 of 23 mantissa bits; the add carries into the exponent as needed.
    normal = (mag + 0x7FFFF + ((mag >> 20) & 1)) & 0xFFF00000
    # Subnormal range (|y| < 2^-6): multiples of 2^-9, the ulp of 2^14.
    a = mag.to(tl.float32, bitcast=True)
    sub = ((a + 16384.0) - 16384.0).to(tl.uint32, bitcast=True)
    out = tl.where(a < 0.015625, sub, normal) | sign
    return out.to(tl.float32, bitcast=True)


@triton.jit
def quantize(x, inv, QMAX: tl.constexpr, FP8: tl.constexpr, EXACT_CAST: tl.constexpr):
    """Quantize fp32 ``x`` with per-row ``inv`` (QMAX / amax): int8 or float8e4nv values.

    EXACT_CAST (set under the interpreter) rounds to the E4M3 grid by hand before the cast;
    on the GPU the cast itself rounds to nearest even (one cvt.rn.satfinite per two values),
    which gives the same bits for the clamped, NaN-free values it sees here.
    """
    y = x * inv
    # NaN only arises on inf/NaN rows (inv == 0); those rows store zeros.
    y = tl.where(y == y, y, 0.0)
    y = tl.minimum(tl.maximum(y, -QMAX), QMAX)
    if FP8:
        if EXACT_CAST:
            y = rne_e4m3(y)
        q = y.to(tl.float8e4nv)
    else:
        q = rne_integer(y).to(tl.int8)
    return q


@triton.jit
def magnitude(x):
    """|x| of fp32 ``x`` with NaN counted as +inf (a row maximum then flags the row)."""
    return tl.where(x == x, tl.abs(x), float("inf"))


@triton.jit
def row_amax(x):
    """Per-row absolute maximum of fp32 ``x`` [ROWS, COLS]; NaN counts as +inf."""
    return tl.max(magnitude(x), axis=1)


@triton.jit
def scale_and_inv(amax, AMAX_FLOOR: tl.constexpr, QMAX: tl.constexpr):
    """The stored scale ``max(amax, floor) / QMAX`` and its quantizing inverse, both IEEE."""
    a = tl.maximum(amax, AMAX_FLOOR)
    return tl.math.div_rn(a, QMAX), tl.math.div_rn(tl.full(a.shape, QMAX, tl.float32), a)


@triton.jit
def rne_bf16(y):
    """fp32 ``y`` rounded to nearest even into bfloat16 (NaN becomes the canonical 0x7FC0)."""
    bits = y.to(tl.uint32, bitcast=True)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    rounded = tl.where(y == y, rounded, 0x7FC0)
    return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)
