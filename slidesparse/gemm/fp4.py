"""FP4 (E2M1) operands with block scales: quantize, pack, swizzle, and the paired slide path.

Pure torch, so every step runs (and is tested) on the CPU; the same code prepares GPU operands.

* E2M1 holds ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}; a 4-bit code is sign (bit 3) + magnitude index.
  Rounding is to nearest, ties to the even code, saturating at 6.
* Block scaling (NVFP4 recipe): one E4M3 scale per ``block`` consecutive values along K,
  scale = amax(block) / 6 rounded to E4M3; values are divided by it and rounded to E2M1. An
  optional fp32 global scale divides everything first (the GEMM's alpha carries it back).
  cuBLASLt reads 16-value blocks (``VEC16_UE4M3``), cuSPARSELt 32-value blocks
  (``VEC32_UE4M3``).
* Packing: two codes per byte, the even K index in the low nibble (CUDA's fp4x2 order).
  Storage dtype ``torch.float4_e2m1fn_x2``: [rows, K] values -> [rows, K/2] packed.
* Scale layout: cuBLASLt reads block scales in 128 x 4 tiles (128 rows, 4 scale columns =
  512 bytes; its "1D block scaling factors layout"), tiles ordered K-tile fastest; inside a
  tile the scale of (row r, column c) sits at ``(r % 32)·16 + (r // 32)·4 + c``. Rows pad to
  128, scale columns to 4. cuSPARSELt's documentation found no layout of its own for
  VEC32_UE4M3; the same tiling (the sm100 tensor cores' scale-factor layout) is assumed, and
  the GPU check of every cell (dequantized reference) is what confirms or refutes it.
* cuSPARSELt's 50% structure for E2M1 is *paired* 4:8: in every 8 consecutive values along K
  at most 2 of the 4 aligned pairs are non-zero. The SlideSparse decomposition therefore runs
  on pairs of K values as its units (:func:`prune_pairs`, :func:`slide_pairs`,
  :func:`lift_pairs`): pattern ``2_L`` means 2 zero pairs in every L pairs, and each slid
  window of 4 pairs holds at most 2 non-zero pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
E2M1_MAX = 6.0
E4M3_MAX = 448.0
CUBLASLT_BLOCK = 16  # CUBLASLT_MATMUL_MATRIX_SCALE_VEC16_UE4M3
CUSPARSELT_BLOCK = 32  # CUSPARSELT_MATMUL_MATRIX_SCALE_VEC32_UE4M3
TILE_ROWS, TILE_COLS = 128, 4
# Midpoints between neighbouring magnitudes: the rounding boundaries.
_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


def _ceil_to(x: int, m: int) -> int:
    return -(-x // m) * m


def encode_e2m1(v: torch.Tensor) -> torch.Tensor:
    """4-bit E2M1 codes (uint8, one per value) of ``v``: nearest, ties to even, saturating."""
    import torch

    a = v.float().abs().clamp(max=E2M1_MAX)
    mids = torch.tensor(_MIDPOINTS, device=v.device)
    code = torch.bucketize(a, mids)  # ties land on the lower code
    at_mid = a == mids[code.clamp(max=len(_MIDPOINTS) - 1)]
    code = code + (at_mid & (code % 2 == 1) & (code < len(_MIDPOINTS))).to(code.dtype)
    sign = (v.float() < 0).to(torch.uint8) << 3
    return code.to(torch.uint8) | sign


def decode_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """fp32 values of 4-bit E2M1 codes (uint8, one per value)."""
    import torch

    grid = torch.tensor(E2M1_VALUES, device=codes.device)
    mag = grid[(codes & 7).long()]
    return torch.where((codes & 8) != 0, -mag, mag)


def pack(codes: torch.Tensor) -> torch.Tensor:
    """[..., K] codes (K even) -> [..., K/2] bytes: even index low nibble, odd index high."""
    if codes.shape[-1] % 2:
        raise ValueError(f"pack needs an even last dim, got {codes.shape[-1]}")
    return (codes[..., 0::2] & 15) | ((codes[..., 1::2] & 15) << 4)


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """[..., K/2] bytes (uint8 or float4_e2m1fn_x2) -> [..., K] codes (uint8)."""
    import torch

    raw = packed.view(torch.uint8)
    return torch.stack([raw & 15, raw >> 4], dim=-1).reshape(*raw.shape[:-1], -1)


def as_fp4x2(packed: torch.Tensor) -> torch.Tensor:
    """Packed bytes viewed as torch's FP4 storage dtype (two E2M1 values per element)."""
    import torch

    return packed.view(torch.float4_e2m1fn_x2)


def global_scale(x: torch.Tensor) -> float:
    """NVFP4's per-tensor scale amax / (6·448): block scales then use E4M3's whole range."""
    amax = float(x.float().abs().max()) if x.numel() else 0.0
    return amax / (E2M1_MAX * E4M3_MAX) if amax > 0 else 1.0


@dataclass
class Quantized:
    """A [rows, K] tensor in block-scaled FP4: codes, per-block E4M3 scales, global scale."""

    codes: torch.Tensor  # [rows, K] uint8 E2M1 codes
    scales: torch.Tensor  # [rows, K/block] float8_e4m3fn, row-major (not swizzled)
    block: int
    global_scale: float = 1.0

    @property
    def packed(self) -> torch.Tensor:
        """[rows, K/2] float4_e2m1fn_x2: what the GEMM reads."""
        return as_fp4x2(pack(self.codes).contiguous())

    def swizzled_scales(self) -> torch.Tensor:
        """The block scales in the libraries' 128x4 tiled layout (flat float8_e4m3fn)."""
        return swizzle(self.scales)

    def dequantize(self) -> torch.Tensor:
        """fp32 [rows, K]: code value · block scale · global scale."""
        s = self.scales.float().repeat_interleave(self.block, dim=-1)
        return decode_e2m1(self.codes) * s * self.global_scale


def quantize(x: torch.Tensor, block: int, *, global_scale: float | None = None) -> Quantized:
    """Block-scaled FP4 of ``x[rows, K]`` (K a multiple of ``block``), NVFP4 recipe.

    scale = amax(block / global) / 6 rounded to E4M3 (saturating at 448); each value / scale
    is rounded to E2M1 (saturating at 6, which a scale rounded down can require). An all-zero
    block gets scale 0 and codes 0.
    """
    import torch

    rows, K = x.shape
    if K % block:
        raise ValueError(f"K={K} is not a multiple of the block size {block}")
    g = 1.0 if global_scale is None else float(global_scale)
    xb = (x.float() / g).reshape(rows, K // block, block)
    amax = xb.abs().amax(dim=-1)
    scales = (amax / E2M1_MAX).clamp(max=E4M3_MAX).to(torch.float8_e4m3fn)
    s = scales.float().unsqueeze(-1)
    q = torch.where(s > 0, xb / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(xb))
    codes = encode_e2m1(q).reshape(rows, K)
    return Quantized(codes, scales, block, g)


def swizzled_size(rows: int, cols: int) -> int:
    """Bytes of the tiled scale layout for ``rows`` x ``cols`` block scales."""
    return _ceil_to(rows, TILE_ROWS) * _ceil_to(cols, TILE_COLS)


def swizzle(scales: torch.Tensor) -> torch.Tensor:
    """Row-major block scales [rows, cols] -> flat 128x4-tiled layout (zero padding)."""
    import torch

    rows, cols = scales.shape
    rp, cp = _ceil_to(rows, TILE_ROWS), _ceil_to(cols, TILE_COLS)
    raw = scales.view(torch.uint8) if scales.element_size() == 1 else scales
    padded = raw.new_zeros((rp, cp))
    padded[:rows, :cols] = raw
    # [row tile, r // 32, r % 32, col tile, c] -> [row tile, col tile, r % 32, r // 32, c]
    tiles = padded.view(rp // TILE_ROWS, 4, 32, cp // TILE_COLS, TILE_COLS)
    out = tiles.permute(0, 3, 2, 1, 4).reshape(-1).contiguous()
    return out.view(scales.dtype) if scales.element_size() == 1 else out


def unswizzle(flat: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`swizzle`: the [rows, cols] row-major block scales."""
    import torch

    rp, cp = _ceil_to(rows, TILE_ROWS), _ceil_to(cols, TILE_COLS)
    if flat.numel() != rp * cp:
        raise ValueError(f"{flat.numel()} scales do not hold a {rows}x{cols} tiled layout")
    raw = flat.view(torch.uint8) if flat.element_size() == 1 else flat
    tiles = raw.view(rp // TILE_ROWS, cp // TILE_COLS, 32, 4, TILE_COLS)
    out = tiles.permute(0, 3, 2, 1, 4).reshape(rp, cp)[:rows, :cols].contiguous()
    return out.view(flat.dtype) if flat.element_size() == 1 else out


def swizzle_offset(row: int, col: int, cols: int) -> int:
    """Offset of block scale (row, col) in the tiled layout of a matrix with ``cols`` columns."""
    tile = (row // TILE_ROWS) * (_ceil_to(cols, TILE_COLS) // TILE_COLS) + col // TILE_COLS
    r = row % TILE_ROWS
    return tile * TILE_ROWS * TILE_COLS + (r % 32) * 16 + (r // 32) * 4 + col % TILE_COLS


def pad_k(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x[rows, K]`` with zero columns appended up to a multiple of ``multiple``."""
    import torch

    extra = _ceil_to(x.shape[-1], multiple) - x.shape[-1]
    if extra == 0:
        return x
    return torch.cat([x, x.new_zeros((*x.shape[:-1], extra))], dim=-1)


def reference(x_deq: torch.Tensor, w_deq: torch.Tensor, rows: list[int]):
    """fp64 ``(x[rows] · wᵀ, |x[rows]| · |w|ᵀ)`` of dequantized operands: what the GEMM computes."""
    import torch

    r = torch.tensor(rows, device=x_deq.device)
    x = x_deq.index_select(0, r).double()
    w = w_deq.double()
    return x @ w.T, x.abs() @ w.abs().T


# --- the slide path on pairs (cuSPARSELt's paired 4:8 for E2M1) -----------------------------


def _pairs(x: torch.Tensor) -> torch.Tensor:
    """[rows, K] -> [rows, ceil(K/2), 2] (odd K padded with a zero column)."""
    x = pad_k(x, 2)
    return x.reshape(x.shape[0], -1, 2)


def pair_k_slide(K: int, pattern) -> int:
    """Slid K (in values) when the pattern is applied to pairs: 2·k_slide(ceil(K/2))."""
    from slidesparse.core import sparsity

    return 2 * sparsity.k_slide(-(-K // 2), pattern)


def prune_pairs(w: torch.Tensor, pattern) -> torch.Tensor:
    """Zero whole pairs so that every L aligned pairs hold at least 2 zero pairs.

    A pair's magnitude is the larger |value|; the two weakest pairs of each group go (pairs
    already zero count). Dense and 2_inf return ``w`` unchanged.
    """
    from slidesparse.core import sparsity

    p = sparsity.parse_pattern(pattern)
    if p.L is None:
        return w
    K = w.shape[-1]
    pairs = _pairs(w)
    score = pairs.float().abs().amax(dim=-1)
    keep = sparsity.prune(score, p) != 0  # pairs already zero are the weakest: they count
    return (pairs * keep.unsqueeze(-1)).reshape(w.shape[0], -1)[:, :K]


def check_paired_4to8(w: torch.Tensor) -> bool:
    """True if every aligned 8 values along K hold at most 2 non-zero aligned pairs."""
    nz = (_pairs(pad_k(w, 8)).float() != 0).any(dim=-1)
    return bool((nz.reshape(w.shape[0], -1, 4).sum(-1) <= 2).all())


def slide_pairs(w: torch.Tensor, pattern) -> torch.Tensor:
    """Slid weight [N, pair_k_slide(K)] of a pair-pruned ``w[N, K]``: the slide on pair units.

    The greedy placement (``sparsity.slide_weight``) runs on a proxy holding each non-zero
    pair's index, then the pairs are gathered to where their index landed.
    """
    import torch

    from slidesparse.core import sparsity

    N = w.shape[0]
    pairs = _pairs(w)  # [N, U, 2]
    U = pairs.shape[1]
    nz = (pairs != 0).any(dim=-1)
    # fp32 holds pair indices exactly (U < 2^24) at half the memory of fp64.
    proxy = torch.arange(1, U + 1, dtype=torch.float32, device=w.device).expand(N, U) * nz
    where = sparsity.slide_weight(proxy.contiguous(), pattern).long() - 1  # [N, Ks_u], -1 empty
    padded = torch.cat([pairs, pairs.new_zeros((N, 1, 2))], dim=1)  # index U is the zero pair
    idx = torch.where(where < 0, torch.full_like(where, U), where)
    out = padded.gather(1, idx.unsqueeze(-1).expand(-1, -1, 2))
    return out.reshape(N, -1).contiguous()


def lift_pairs(x: torch.Tensor, pattern) -> torch.Tensor:
    """Activation ``x[M, K]`` lifted on pair units to [M, pair_k_slide(K)]."""
    import torch

    from slidesparse.core import sparsity

    M = x.shape[0]
    pairs = _pairs(x)
    U = pairs.shape[1]
    idx = sparsity.slide_index(U, pattern, device=x.device)
    padded = torch.cat([pairs, pairs.new_zeros((M, 1, 2))], dim=1)
    idx = torch.where(idx < 0, torch.full_like(idx, U), idx)
    return padded.index_select(1, idx).reshape(M, -1).contiguous()


@dataclass
class Operand:
    """One GEMM operand ready for a block-scaled FP4 kernel, and what it computes with."""

    packed: torch.Tensor  # [rows, K_q/2] float4_e2m1fn_x2, contiguous
    scale: torch.Tensor  # flat float8_e4m3fn block scales, 128x4 tiled
    dequantized: torch.Tensor  # [rows, K_q] the values the kernel multiplies (bf16: exact)
    block: int

    @property
    def k_values(self) -> int:
        return self.packed.shape[-1] * 2


def prepare(x: torch.Tensor, block: int, k_multiple: int) -> Operand:
    """Quantize ``x[rows, K]`` (zero-padded to a multiple of ``k_multiple``) for the GEMM.

    No global scale: the kernel-level operands are O(1) values, and alpha stays 1. The
    dequantized copy is bf16, which holds every E2M1 · E4M3 product exactly.
    """
    import torch

    q = quantize(pad_k(x, k_multiple), block)
    return Operand(q.packed, q.swizzled_scales(), q.dequantize().to(torch.bfloat16), block)
