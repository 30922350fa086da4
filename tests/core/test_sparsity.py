"""The SlideSparse transform: patterns, shapes, greedy slide, lift and exactness."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slidesparse.core.errors import UserError
from slidesparse.core.sparsity import (
    ALL_SPARSE,
    check_2to4,
    check_exact,
    check_pattern,
    compressed_values,
    expansion,
    ideal_speedup,
    k_pad,
    k_slide,
    lift_activation,
    parse_pattern,
    parse_patterns,
    prune,
    slide_index,
    slide_weight,
)

# docs/method.md, "The transform", cell for cell: K -> K_slide for 2_4 ... 2_16, 2_inf.
K_SLIDE_TABLE = {
    2048: (2048, 2752, 3072, 3296, 3424, 3552, 3584, 4096),
    2560: (2560, 3424, 3840, 4096, 4288, 4416, 4480, 5120),
    3072: (3072, 4096, 4608, 4928, 5120, 5280, 5376, 6144),
    3584: (3584, 4800, 5376, 5760, 5984, 6144, 6272, 7168),
    5120: (5120, 6848, 7680, 8192, 8544, 8800, 8960, 10240),
    6912: (6912, 9216, 10368, 11072, 11520, 11872, 12096, 13824),
    8192: (8192, 10944, 12288, 13120, 13664, 14080, 14336, 16384),
    13824: (13824, 18432, 20736, 22144, 23040, 23712, 24192, 27648),
    18944: (18944, 25280, 28416, 30336, 31584, 32512, 33152, 37888),
}

EVEN_L = list(range(4, 17, 2))


@pytest.mark.parametrize("K", sorted(K_SLIDE_TABLE))
def test_k_slide_table(K):
    assert tuple(k_slide(K, p) for p in ALL_SPARSE) == K_SLIDE_TABLE[K]


def test_dense_keeps_k_and_compressed_size():
    assert k_slide(3584, "dense") == 3584
    assert compressed_values(3584, "2_8") == 5376 // 2
    assert compressed_values(3584, "dense") == 3584


@pytest.mark.parametrize(
    ("text", "name", "paper"),
    [
        ("2_8", "2_8", "6:8"),
        ("6:8", "2_8", "6:8"),
        ("2:4", "2_4", "2:4"),
        (" 14:16 ", "2_16", "14:16"),
        ("2_INF", "2_inf", "inf"),
        ("inf", "2_inf", "inf"),
        ("dense", "dense", "dense"),
    ],
)
def test_parse_pattern_accepts_both_spellings(text, name, paper):
    p = parse_pattern(text)
    assert (p.name, p.paper) == (name, paper)


@pytest.mark.parametrize("bad", ["3_8", "2_7", "2_2", "abc", "5:8", "2_18", "", "2_0", "8:8"])
def test_parse_pattern_rejects_with_valid_list(bad):
    with pytest.raises(UserError) as exc:
        parse_pattern(bad)
    msg = str(exc.value)
    assert repr(bad) in msg and "valid:" in msg and "\n" not in msg


def test_parse_patterns_all_and_dedup():
    assert [p.name for p in parse_patterns("dense,all,2_8")] == ["dense", *ALL_SPARSE]
    with pytest.raises(UserError):
        parse_patterns(" , ")


@pytest.mark.parametrize("L", EVEN_L)
def test_formulas(L):
    p = f"2_{L}"
    assert ideal_speedup(p) == pytest.approx(L / (L - 2))
    assert expansion(p) == pytest.approx(2 * (L - 2) / L)
    assert k_pad(100, p) % L == 0 and 0 <= k_pad(100, p) - 100 < L
    assert k_slide(100, p) % 32 == 0
    assert ideal_speedup("2_inf") == 1.0 and expansion("2_inf") == 2.0


def test_bad_k_is_user_error():
    for bad in (0, -5):
        with pytest.raises(UserError, match="K must be a positive integer"):
            k_slide(bad, "2_8")


def test_worked_example_2_8():
    assert slide_index(8, "2_8")[:12].tolist() == [0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7]
    assert slide_index(8, "2_8")[12:].eq(-1).all()  # ceil32 padding
    a, b, c, d, e, f = 1.0, 2.0, 3.0, 4.0, 5.0, 6.0
    w = torch.tensor([[a, 0, b, c, 0, d, e, f]])
    assert slide_weight(w, "2_8")[0, :12].tolist() == [a, 0, b, 0, 0, c, 0, d, 0, 0, e, f]
    x = torch.arange(8.0)[None]
    assert lift_activation(x, "2_8")[0, :12].tolist() == [0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7]


@pytest.mark.parametrize("L", EVEN_L)
def test_greedy_never_fails_exhaustive(L):
    """Every placement of (at least) 2 zeros in one group: the greedy places every non-zero."""
    p = f"2_{L}"
    rows = []
    for zeros in itertools.combinations(range(L), 2):
        row = [float(i + 1) for i in range(L)]
        for z in zeros:
            row[z] = 0.0
        rows.append(row)
    w = torch.tensor(rows)
    ws = slide_weight(w, p)
    assert check_2to4(ws)
    # every non-zero lands exactly once: same multiset of values per row
    for src, dst in zip(w, ws, strict=True):
        assert sorted(v for v in dst.tolist() if v) == sorted(v for v in src.tolist() if v)
    x = torch.randint(-5, 6, (3, L)).float()
    torch.testing.assert_close(lift_activation(x, p) @ ws.T, x @ w.T, rtol=0, atol=0)


def test_greedy_handles_extra_zeros_exhaustive():
    """More zeros than needed (any subset with >= 2 zeros) for L = 8: still exact and 2:4."""
    L = 8
    rows = []
    for mask in range(2**L):
        if L - bin(mask).count("1") >= 2:
            rows.append([float(i + 1) if mask >> i & 1 else 0.0 for i in range(L)])
    w = torch.tensor(rows)
    ws = slide_weight(w, "2_8")
    assert check_2to4(ws)
    assert torch.equal(ws.sum(1), w.sum(1)) and torch.equal((ws != 0).sum(1), (w != 0).sum(1))


@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(1, 24),
    K=st.integers(1, 120),
    L=st.sampled_from([*EVEN_L, None]),
    M=st.integers(1, 6),
    method=st.sampled_from(["magnitude", "random"]),
    seed=st.integers(0, 2**16),
)
def test_property_exact_and_valid(N, K, L, M, method, seed):
    p = "2_inf" if L is None else f"2_{L}"
    gen = torch.Generator().manual_seed(seed)
    w = torch.randint(-9, 10, (N, K), generator=gen).float()
    x = torch.randint(-9, 10, (M, K), generator=gen).float()
    wp = prune(w, p, method=method, generator=gen)
    assert check_pattern(wp, p)
    # pruning only zeroes values
    assert torch.equal(wp[wp != 0], w[wp != 0])
    report = check_exact(wp, x, p)
    assert report.ok, report
    assert report.K_slide == k_slide(K, p)


@settings(max_examples=30, deadline=None)
@given(K=st.integers(1, 200), L=st.sampled_from(EVEN_L))
def test_property_index_map(K, L):
    idx = slide_index(K, f"2_{L}")
    valid = idx[idx >= 0]
    assert int(valid.max()) < K
    # every input column appears at least once (no input is lost by the lift)
    assert set(valid.tolist()) == set(range(K))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int8, torch.float8_e4m3fn])
def test_dtypes_prune_slide_lift(dtype):
    gen = torch.Generator().manual_seed(1)
    w = torch.randint(-7, 8, (16, 70), generator=gen).to(dtype)
    x = torch.randint(-3, 4, (5, 70), generator=gen).to(dtype)
    wp = prune(w, "2_6")
    assert wp.dtype == dtype and check_pattern(wp, "2_6")
    ws, xs = slide_weight(wp, "2_6"), lift_activation(x, "2_6")
    assert ws.dtype == dtype and xs.dtype == dtype and check_2to4(ws)
    assert torch.equal(xs.double() @ ws.double().T, x.double() @ wp.double().T)


def test_slide_rejects_pattern_violation():
    w = torch.ones(2, 8)
    with pytest.raises(UserError, match="violates 2_8"):
        slide_weight(w, "2_8")
    with pytest.raises(UserError, match="2-D"):
        slide_weight(torch.ones(8), "2_8")


def test_magnitude_prune_drops_smallest():
    w = torch.tensor([[5.0, -1.0, 3.0, 0.5, 7.0, -8.0]])
    assert prune(w, "2_6").tolist() == [[5.0, 0.0, 3.0, 0.0, 7.0, -8.0]]
    # a partial last group uses its padding as the zeros: nothing real is dropped there
    w = torch.tensor([[5.0, 1.0, 3.0, 2.0, 7.0, 8.0, 9.0, 4.0, 6.0, 10.0]])
    assert prune(w, "2_8")[0, 8:].tolist() == [6.0, 10.0]


def test_dense_and_inf_leave_weight():
    w = torch.randn(4, 10)
    assert prune(w, "dense") is w and prune(w, "2_inf") is w
    assert slide_weight(w, "dense") is w
    ws = slide_weight(w, "2_inf")
    assert ws.shape == (4, k_slide(10, "2_inf")) and check_2to4(ws)


def test_bad_prune_method():
    with pytest.raises(UserError, match="prune method"):
        prune(torch.ones(2, 8), "2_8", method="best")
