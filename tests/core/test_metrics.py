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
