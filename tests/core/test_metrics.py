"""The speedup vocabulary: bounds, % of bound, efficiency vs 2:4, the suspect margin."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slidesparse.core import metrics

PATTERNS = ["2_4", "2_6", "2_8", "2_10", "2_12", "2_14", "2_16"]


def test_ideal_is_l_over_l_minus_2():
    assert metrics.ideal("2_4") == 2.0 and metrics.ideal("6:8") == pytest.approx(8 / 6)
    assert metrics.ideal("2_inf") == 1.0


@given(st.sampled_from(PATTERNS), st.floats(0.1, 3.0))
def test_suspect_exactly_beyond_the_margin(pattern, s):
    bound = metrics.ideal(pattern) * metrics.SUSPECT_MARGIN
    assert metrics.is_suspect(s, pattern) == (s > bound)
    assert metrics.pct_of_bound(metrics.ideal(pattern), pattern) == pytest.approx(100.0)


@given(st.sampled_from(PATTERNS), st.floats(0.5, 2.0))
def test_efficiency_is_one_when_the_pattern_keeps_2_4_efficiency(pattern, s24):
    # A pattern that reaches the same fraction of its bound as 2:4 of its own has Eff = 1.
    s = s24 * metrics.ideal(pattern) / 2.0
    assert metrics.efficiency_vs_2_4(s, s24, pattern) == pytest.approx(1.0)


def test_speedup_is_dense_over_sparse():
    assert metrics.speedup(4.0, 2.0) == 2.0


def test_within_noise_when_the_interval_holds_one():
    assert metrics.within_noise(0.99, 1.01) and metrics.within_noise(1.0, 1.2)
    assert not metrics.within_noise(1.01, 1.2) and not metrics.within_noise(0.8, 0.99)
    assert not metrics.within_noise(None, None)
    assert not metrics.within_noise(float("nan"), float("nan"))


@given(
    st.lists(st.tuples(st.floats(1.0, 1e4), st.floats(0.5, 2.0), st.floats(0.0, 0.2)),
             min_size=1, max_size=6)
)  # fmt: skip
def test_a_total_speedup_lies_within_the_totals_of_its_layers_bounds(layers):
    dense = [d for d, _, _ in layers]
    speedups = [s for _, s, _ in layers]
    lo = metrics.total_speedup(dense, [s * (1 - w) for _, s, w in layers])
    hi = metrics.total_speedup(dense, [s * (1 + w) for _, s, w in layers])
    total = metrics.total_speedup(dense, speedups)
    assert lo <= total * (1 + 1e-12) and total <= hi * (1 + 1e-12)
    assert min(speedups) * (1 - 1e-12) <= total <= max(speedups) * (1 + 1e-12)
    # equal speedups: the total is that speedup
    assert metrics.total_speedup(dense, [1.5] * len(dense)) == pytest.approx(1.5)
