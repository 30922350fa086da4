"""Triton helpers that round explicitly, so kernels match torch bit for bit everywhere.

Why not plain ``.to(...)`` casts: Triton's interpreter (``TRITON_INTERPRET=1``, which CI uses)
converts fp32 to float8e4nv by looking only at the first dropped bit (ties away from zero, no
sticky bit), ORs a mantissa carry into the exponent field instead of adding it (31.3 becomes
16, not 32) and encodes overflow as NaN; it converts fp32 to bf16 by truncation. On the GPU
the same casts round to nearest even. Rounding in fp32 arithmetic and bit operations first
makes every final cast exact, so both paths store identical bits.

On the GPU only ``rne_bf16`` and the INT8 magic-number add stay in the hot path (a few
integer or float adds); the FP8 cast is native there and hand-rounded only under the
interpreter.
Each helper takes and returns fp32 tensors unless it says otherwise.
"""

from __future__ import annotations

import triton
import triton.language as tl


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
    """Quantize fp32 ``x`` with per-row ``inv`` (QMAX / amax, broadcastable): int8 or
    float8e4nv values.

    Written for few instructions per element (the kernels are close to instruction bound):
    |x| <= amax makes |x * inv| <= QMAX * (1 + 2^-23), which rounds to at most QMAX, so no
    clamp is needed on the GPU; the only NaN products come from rows with an inf or NaN
    (inv == 0 exactly then), which are zeroed with one select on a per-row predicate.
    INT8 takes the integer from the low byte of ``y + 1.5 * 2^23`` (the add rounds half to
    even), skipping a float-to-int conversion. FP8 uses the native cast (round to nearest
    even, saturating); under the interpreter (EXACT_CAST) it is clamped and hand-rounded.
    """
    y = tl.where(inv == 0.0, 0.0, x * inv)
    if FP8:
        if EXACT_CAST:
            y = rne_e4m3(tl.minimum(tl.maximum(y, -QMAX), QMAX))
        q = y.to(tl.float8e4nv)
    else:
        q = (y + 12582912.0).to(tl.int32, bitcast=True).to(tl.int8)
    return q


@triton.jit
def abs_max_bits(x, axis: tl.constexpr):
    """max |x| of fp32 ``x`` along ``axis``, as int32 bits of the fp32 value.

    Bits with the sign cleared order like the non-negative floats they encode, and every NaN
    sorts above +inf, so one integer max per element finds the maximum and flags NaN (a float
    max would drop NaN, and a NaN-propagating custom reduce crawls in the interpreter).
    Partial results merge with ``tl.maximum``; :func:`scale_and_inv` reads the bits.
    """
    return tl.max(x.to(tl.int32, bitcast=True) & 0x7FFFFFFF, axis)


@triton.jit
def scale_and_inv(amax_bits, AMAX_FLOOR: tl.constexpr, QMAX: tl.constexpr):
    """The stored scale ``max(amax, floor) / QMAX`` and its quantizing inverse, both IEEE.

    ``amax_bits`` comes from :func:`abs_max_bits`; inf or NaN (bits >= those of +inf) gives
    scale inf and inverse 0."""
    amax = tl.maximum(amax_bits.to(tl.float32, bitcast=True), AMAX_FLOOR)
    a = tl.where(amax_bits >= 0x7F800000, float("inf"), amax)
    return tl.math.div_rn(a, QMAX), tl.math.div_rn(tl.full(a.shape, QMAX, tl.float32), a)


@triton.jit
def rne_bf16(y):
    """fp32 ``y`` rounded to nearest even into bfloat16 (NaN becomes the canonical 0x7FC0)."""
    bits = y.to(tl.uint32, bitcast=True)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    rounded = tl.where(y == y, rounded, 0x7FC0)
    return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)
