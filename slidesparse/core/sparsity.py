"""The SlideSparse transform: patterns, shapes, pruning, weight sliding, activation lifting.

A ``2_L`` weight has at least 2 zeros in every aligned group of L values along K. Each group
is rewritten as NW = L/2 - 1 overlapping windows of 4 (stride 2), each 2:4-valid, so a 2:4
Sparse Tensor Core can run it over K_slide = ceil32(ceil(K/L) * (2L - 4)) columns. The
activation is rewritten by the same index map, so W_slide · X_slideᵀ == W · Xᵀ exactly.

Everything here is pure torch, runs on any device, and loops only over the (at most 28)
slot positions of one group, never over rows or groups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from slidesparse.core.errors import UserError

MAX_L = 16
# The patterns the paper's matrix measures, in order of increasing L.
ALL_SPARSE = ("2_4", "2_6", "2_8", "2_10", "2_12", "2_14", "2_16", "2_inf")
ALL_PATTERNS = ("dense", *ALL_SPARSE)

_FP8_DTYPES = tuple(
    getattr(torch, name)
    for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
    if hasattr(torch, name)
)


@dataclass(frozen=True, order=True)
class Pattern:
    """A sparsity pattern: ``dense``, ``2_L`` (L even, L >= 4) or ``2_inf``."""

    name: str
    L: int | None  # group length; None for dense and 2_inf

    @property
    def is_dense(self) -> bool:
        """The plain dense GEMM at the original K (the baseline)."""
        return self.name == "dense"

    @property
    def is_inf(self) -> bool:
        """A dense weight pushed through the slide path (K_slide = 2K)."""
        return self.name == "2_inf"

    @property
    def paper(self) -> str:
        """Paper notation counting non-zeros: ``6:8`` for ``2_8``."""
        if self.L is None:
            return "dense" if self.is_dense else "inf"
        return f"{self.L - 2}:{self.L}"

    @property
    def windows(self) -> int:
        """Windows of 4 per group, NW = L/2 - 1 (0 for dense and 2_inf)."""
        return self.L // 2 - 1 if self.L else 0

    def __str__(self) -> str:
        return self.name


_VALID_HINT = "valid: dense, 2_inf, 2_L or (L-2):L with L even and 4 <= L <= 16 (e.g. 2_8, 6:8)"


def parse_pattern(text: str | Pattern) -> Pattern:
    """Parse ``2_8``, ``6:8``, ``2_inf``/``inf`` or ``dense`` into a canonical :class:`Pattern`."""
    if isinstance(text, Pattern):
        return text
    s = str(text).strip().lower()
    if s == "dense":
        return Pattern("dense", None)
    if s in ("2_inf", "inf", "inf:inf"):
        return Pattern("2_inf", None)
    m = re.fullmatch(r"(\d+)_(\d+)", s)
    if m:
        zeros, L = int(m.group(1)), int(m.group(2))
        if zeros != 2:
            raise UserError(
                f"bad sparsity {text!r}: only 2 zeros per group are supported; {_VALID_HINT}"
            )
    else:
        m = re.fullmatch(r"(\d+):(\d+)", s)
        if not m:
            raise UserError(f"bad sparsity {text!r}: {_VALID_HINT}")
        nonzeros, L = int(m.group(1)), int(m.group(2))
        if nonzeros != L - 2:
            raise UserError(f"bad sparsity {text!r}: only (L-2):L is supported; {_VALID_HINT}")
    if L % 2 or L < 4 or L > MAX_L:
        raise UserError(
            f"bad sparsity {text!r}: L={L} is not an even number in 4..{MAX_L}; {_VALID_HINT}"
        )
    return Pattern(f"2_{L}", L)


def parse_patterns(text: str) -> list[Pattern]:
    """Parse a comma-separated list (``2_4,6:8,2_inf``); ``all`` stands for every sparse pattern."""
    items = [t for t in (p.strip() for p in text.split(",")) if t]
    if not items:
        raise UserError(f"empty sparsity list; {_VALID_HINT}")
    out: list[Pattern] = []
    for item in items:
        for p in ALL_SPARSE if item.lower() == "all" else (item,):
            pat = parse_pattern(p)
            if pat not in out:
                out.append(pat)
    return out


def _check_k(K: int) -> None:
    if not isinstance(K, int) or K <= 0:
        raise UserError(f"bad K={K!r}: K must be a positive integer")


def _ceil_to(x: int, m: int) -> int:
    return -(-x // m) * m


def k_pad(K: int, pattern: str | Pattern) -> int:
    """K rounded up to whole groups: ceil(K/L)·L (K itself for dense, even K for 2_inf)."""
    _check_k(K)
    p = parse_pattern(pattern)
    if p.is_dense:
        return K
    if p.is_inf:
        return _ceil_to(K, 2)
    return _ceil_to(K, p.L)


def k_slide(K: int, pattern: str | Pattern) -> int:
    """Columns of the slid weight / lifted activation: ceil32(G·(2L-4)); 2K for 2_inf."""
    p = parse_pattern(pattern)
    if p.is_dense:
        _check_k(K)
        return K
    if p.is_inf:
        return _ceil_to(2 * k_pad(K, p), 32)
    groups = k_pad(K, p) // p.L
    return _ceil_to(groups * (2 * p.L - 4), 32)


def expansion(pattern: str | Pattern) -> float:
    """Asymptotic growth of K on the slide path: 2(L-2)/L (2 for 2_inf, 1 for dense)."""
    p = parse_pattern(pattern)
    if p.is_dense:
        return 1.0
    if p.is_inf:
        return 2.0
    return 2 * (p.L - 2) / p.L


def ideal_speedup(pattern: str | Pattern) -> float:
    """Upper bound of the speedup over dense: L/(L-2) (2.0 for 2_4, 1.0 for 2_inf and dense)."""
    p = parse_pattern(pattern)
    if p.L is None:
        return 1.0
    return p.L / (p.L - 2)


def compressed_values(K: int, pattern: str | Pattern) -> int:
    """Values per row kept by 2:4 compressed storage (K_slide/2; K for dense)."""
    p = parse_pattern(pattern)
    return k_slide(K, p) if p.is_dense else k_slide(K, p) // 2


def slide_index(
    K: int, pattern: str | Pattern, device: torch.device | str | None = None
) -> torch.Tensor:
    """The index map in(j) for j in [0, K_slide): the source column of each slid column.

    in(j) = g·L + 2w + lane with g = j div (2L-4), r = j mod (2L-4), w = r div 4, lane = r mod 4;
    2_inf is one window per input pair (in(j) = 2·(j div 4) + j mod 4). Slots that fall in K
    padding are -1 (they hold zeros on both sides).
    """
    p = parse_pattern(pattern)
    ks = k_slide(K, p)
    j = torch.arange(ks, dtype=torch.int64, device=device)
    if p.is_dense:
        return j
    if p.is_inf:
        src = 2 * (j // 4) + j % 4
    else:
        per_group = 2 * p.L - 4
        g, r = j // per_group, j % per_group
        src = g * p.L + 2 * (r // 4) + r % 4
    return torch.where(src < K, src, torch.full_like(src, -1))


# --- bit-level helpers: fp8 tensors support few ops, so move their bits as uint8 ----------------


def _is_fp8(t: torch.Tensor) -> bool:
    return t.dtype in _FP8_DTYPES


def _raw(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if _is_fp8(t) else t


def _nonzero_mask(t: torch.Tensor) -> torch.Tensor:
    return t.float() != 0 if _is_fp8(t) else t != 0


def _pad_last(t: torch.Tensor, new_len: int) -> torch.Tensor:
    extra = new_len - t.shape[-1]
    if extra == 0:
        return t
    return torch.cat([t, t.new_zeros((*t.shape[:-1], extra))], dim=-1)


def _groups(t: torch.Tensor, L: int) -> torch.Tensor:
    """[..., K] -> [..., G, L], padding K with zeros (raw bits for fp8)."""
    raw = _raw(t)
    raw = _pad_last(raw, _ceil_to(raw.shape[-1], L))
    return raw.reshape(*raw.shape[:-1], -1, L)


def _unraw(raw: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return raw.view(like.dtype) if _is_fp8(like) else raw


def prune(
    w: torch.Tensor,
    pattern: str | Pattern,
    method: str = "magnitude",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Zero 2 values in every aligned group of L along the last dim (K).

    ``magnitude`` zeroes the two smallest |w| of each group, ``random`` two random positions.
    K padding counts as zeros, so a partial last group is pruned only as far as needed.
    Works for float, int8 and fp8 tensors on any device; dense and 2_inf return ``w`` unchanged.
    """
    p = parse_pattern(pattern)
    if method not in ("magnitude", "random"):
        raise UserError(f"bad prune method {method!r}; valid: magnitude, random")
    if p.L is None:
        return w
    K = w.shape[-1]
    groups = _groups(w, p.L)  # [..., G, L] raw bits
    if method == "magnitude":
        score = _unraw(groups, w).float().abs()
    else:
        score = torch.rand(groups.shape, generator=generator, device="cpu").to(groups.device)
    # K padding must be among the zeros chosen: give it the lowest score.
    col = torch.arange(groups.shape[-2] * p.L, device=groups.device).reshape(-1, p.L)
    score = score.masked_fill(col >= K, -1.0)
    # topk over the tiny L axis measured faster on CPU than two argmin passes.
    drop = score.topk(2, dim=-1, largest=False).indices
    out = groups.scatter(-1, drop, 0).reshape(*w.shape[:-1], -1)[..., :K]
    return _unraw(out.contiguous(), w)


def check_pattern(w: torch.Tensor, pattern: str | Pattern) -> bool:
    """True if every aligned group of L along K has at least 2 zeros (K padding counts as zero)."""
    p = parse_pattern(pattern)
    if p.L is None:
        return True
    nz = _groups(_nonzero_mask(w).to(torch.uint8), p.L)
    return bool((nz.sum(-1) <= p.L - 2).all())


def check_2to4(w: torch.Tensor) -> bool:
    """True if every aligned group of 4 along the last dim has at most 2 non-zeros."""
    return check_pattern(w, "2_4")


def slide_weight(w: torch.Tensor, pattern: str | Pattern) -> torch.Tensor:
    """Rewrite a pruned weight [N, K] as overlapping 2:4 windows: [N, K_slide].

    Greedy allocation, per row and group: visit windows in order and lanes in order; copy the
    source weight into a slot if it is non-zero, not placed yet, and the window holds fewer than
    2 non-zeros. Raises :class:`UserError` if ``w`` violates the pattern. ``2_inf`` (a dense
    weight) puts each input pair in lanes 0-1 of its own window, which is what the greedy does
    on a dense weight, without the K/2-long sequential chain.
    """
    p = parse_pattern(pattern)
    if w.dim() != 2:
        raise UserError(f"slide_weight expects a 2-D weight [N, K], got shape {tuple(w.shape)}")
    N, K = w.shape
    if p.is_dense:
        return w
    ks = k_slide(K, p)
    raw = _raw(w)
    if p.is_inf:
        pairs = _pad_last(raw, k_pad(K, p)).reshape(N, -1, 2)
        windows = torch.cat([pairs, torch.zeros_like(pairs)], dim=-1)  # [N, K/2, 4]
        return _unraw(_pad_last(windows.reshape(N, -1), ks).contiguous(), w)
    L, nw = p.L, p.windows
    # Slot-major [L, N, G] / [4·NW, N, G]: each slot's pass touches one contiguous slice.
    src = _groups(raw, L).movedim(-1, 0).contiguous()
    nz = _groups(_nonzero_mask(w).to(torch.uint8), L).movedim(-1, 0).contiguous().bool()
    out = src.new_zeros((4 * nw, *src.shape[1:]))
    zero = out.new_zeros(())
    # The greedy, window by window. Offsets 2w and 2w+1 were lanes 2-3 of window w-1, so the
    # only state between windows is which of them are still unplaced non-zeros (c0, c1); they
    # always fit in lanes 0-1. Lanes 2-3 then take non-zeros while the window holds < 2.
    c0, c1 = nz[0], nz[1]
    for win in range(nw):
        n2, n3 = nz[2 * win + 2], nz[2 * win + 3]
        both = c0 & c1
        take2 = n2 & ~both
        take3 = n3 & ~(both | (take2 & (c0 | c1)))
        slot = 4 * win
        torch.where(c0, src[2 * win], zero, out=out[slot])
        torch.where(c1, src[2 * win + 1], zero, out=out[slot + 1])
        torch.where(take2, src[2 * win + 2], zero, out=out[slot + 2])
        torch.where(take3, src[2 * win + 3], zero, out=out[slot + 3])
        c0, c1 = n2 & ~take2, n3 & ~take3
    # Every non-zero is placed unless the last window had to leave one behind, which happens
    # exactly when some group holds more than L-2 non-zeros (the greedy is complete otherwise).
    if bool((c0 | c1).any()):
        raise UserError(
            f"weight [{N}, {K}] violates {p.name} ({p.paper}): some group of {p.L} has fewer "
            f"than 2 zeros; prune it first (slidesparse.core.sparsity.prune)"
        )
    out = out.movedim(0, -1).reshape(N, -1)
    return _unraw(_pad_last(out, ks).contiguous(), w)


def lift_activation(x: torch.Tensor, pattern: str | Pattern) -> torch.Tensor:
    """Lift an activation [..., K] to [..., K_slide] to match the slid weight: x_s[j] = x[in(j)]."""
    p = parse_pattern(pattern)
    if p.is_dense:
        return x
    K = x.shape[-1]
    idx = slide_index(K, p, device=x.device)
    raw = _raw(x)
    # One zero column at position K serves every padding slot.
    raw = torch.cat([raw, raw.new_zeros((*raw.shape[:-1], 1))], dim=-1)
    idx = torch.where(idx < 0, torch.full_like(idx, K), idx)
    return _unraw(raw.index_select(-1, idx), x)


@dataclass(frozen=True)
class ExactnessReport:
    """Outcome of :func:`check_exact` for one weight and pattern."""

    pattern: str
    N: int
    K: int
    K_slide: int
    pattern_ok: bool
    two_four_ok: bool
    exact: bool
    max_abs_err: float

    @property
    def ok(self) -> bool:
        """All three checks passed."""
        return self.pattern_ok and self.two_four_ok and self.exact


def check_exact(w_pruned: torch.Tensor, x: torch.Tensor, pattern: str | Pattern) -> ExactnessReport:
    """Check a pruned weight and activation: pattern, 2:4 windows, and W·Xᵀ == W_slide·X_slideᵀ.

    Pass integer-valued tensors: products are summed in float64, exact while every partial
    sum stays below 2^53, so equality is exact rather than approximate.
    """
    p = parse_pattern(pattern)
    N, K = w_pruned.shape
    ws = slide_weight(w_pruned, p)
    xs = lift_activation(x, p)
    ref = x.double() @ w_pruned.double().T
    got = xs.double() @ ws.double().T
    err = float((ref - got).abs().max()) if ref.numel() else 0.0
    return ExactnessReport(
        pattern=p.name,
        N=N,
        K=K,
        K_slide=ws.shape[-1],
        pattern_ok=check_pattern(w_pruned, p),
        two_four_ok=p.is_dense or check_2to4(ws),
        exact=err == 0.0,
        max_abs_err=err,
    )


def describe(pattern: str | Pattern, K: int | None = None) -> dict:
    """One row of the patterns table: name, paper notation, expansion, ideal bound, K_slide."""
    p = parse_pattern(pattern)
    row = {
        "pattern": p.name,
        "paper": p.paper,
        "nonzero_share": 1.0 if p.L is None else (p.L - 2) / p.L,
        "expansion": expansion(p),
        "ideal_speedup": ideal_speedup(p),
    }
    if K is not None:
        row["K_slide"] = k_slide(K, p)
        row["compressed_values"] = compressed_values(K, p)
    return row
