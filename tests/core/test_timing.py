"""Adaptive timing on a controlled clock: the spread statistic, stopping rules, interleaving."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slidesparse.core import timing


class FakeClock:
    """A clock that moves only when a fake call says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def call(self, durations_us, log: list | None = None, name: str = ""):
        """A callable that takes the next of ``durations_us`` (a list: cycled) on this clock.

        Times are floats, so a sample equals its duration to ~1e-9 µs, not exactly."""
        it = itertools.cycle(durations_us) if isinstance(durations_us, list) else durations_us

        def fn() -> None:
            if log is not None:
                log.append(name)
            self.now += next(it) * 1e-6

        return fn


def _adaptive(clock, durations, **policy):
    fn = clock.call(durations)
    return timing.time_adaptive(fn, "cpu", timing.Adaptive(**policy), warmup=0, clock=clock)


# ------------------------------------------------------------------------ the statistic


@pytest.mark.parametrize(("n", "k"), [(5, 0), (6, 0), (9, 1), (10, 1), (20, 5), (100, 39)])
def test_ci_ranks_are_the_binomial_tables(n, k):
    # 95% distribution-free intervals of the median: ranks (k+1, n-k), e.g. n=10: x2..x9
    assert timing._ci_rank(n) == k
    assert timing.median_ci(list(range(1, n + 1))) == (k + 1, n - k)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.1, 1e6), min_size=1, max_size=300))
def test_the_interval_holds_the_median_and_the_spread_has_no_unit(xs):
    lo, hi = timing.median_ci(xs)
    assert lo <= statistics.median(xs) <= hi
    spread = timing.relative_spread(xs)
    assert spread >= 0
    if len(xs) > 1:
        assert timing.relative_spread([x * 1000 for x in xs]) == pytest.approx(spread)


def test_one_sample_has_no_known_spread_and_equal_samples_none():
    assert timing.relative_spread([5.0]) == math.inf
    assert timing.relative_spread([5.0] * 7) == 0.0
    # 10 samples: x2..x9 = 2..9 around a median of 5.5
    assert timing.relative_spread(list(range(1, 11))) == pytest.approx(7 / 2 / 5.5)


def test_the_spread_shrinks_as_samples_accumulate():
    noisy = [100.0 + (7 * i % 11) - 5 for i in range(1000)]  # a deterministic ±5% jitter
    assert timing.relative_spread(noisy[:20]) > timing.relative_spread(noisy) < 0.01


def test_summarize_carries_the_spread_and_whether_it_met_the_target():
    s = timing.summarize(timing.Timing((4.0, 1.0, 3.0, 2.0, 5.0), "perf_counter", 0.5))
    assert s["latency_spread"] == pytest.approx((5 - 1) / 2 / 3)
    assert s["spread_met"] is False
    assert timing.summarize(timing.Timing((1.0, 1.0), "perf_counter"))["spread_met"] is None


@pytest.mark.parametrize(
    "bad", [{"target": 0.0}, {"target": -1.0}, {"min_samples": 0}, {"max_s": 0.0}]
)
def test_a_bad_policy_is_refused(bad):
    with pytest.raises(ValueError, match="Adaptive"):
        timing.Adaptive(**bad)


# ------------------------------------------------------------------------ stopping rules


def test_stops_at_min_samples_once_the_spread_is_met():
    t = _adaptive(FakeClock(), [100.0], target=0.01, min_samples=7, max_s=10.0)
    assert t.samples_us == pytest.approx((100.0,) * 7)
    assert t.spread < 1e-9 and t.met is True and t.target == 0.01 and t.timer == "perf_counter"


def test_min_samples_are_taken_even_past_the_cap():
    clock = FakeClock()
    t = _adaptive(clock, [1e6], target=0.01, min_samples=4, max_s=0.5)  # 1 s per sample
    assert len(t.samples_us) == 4 and clock.now == pytest.approx(4.0)


def test_keeps_sampling_while_the_spread_is_above_target_then_stops():
    # ten scattered samples, then a steady 100 µs: the median's interval closes on 100
    scattered = [50.0, 150.0, 70.0, 130.0, 90.0, 110.0, 60.0, 140.0, 80.0, 120.0]
    clock = FakeClock()
    call = clock.call(itertools.chain(scattered, itertools.repeat(100.0)))
    policy = timing.Adaptive(target=0.01, min_samples=10, max_s=60.0)
    t = timing.time_adaptive(call, "cpu", policy, warmup=0, clock=clock)
    n = len(t.samples_us)
    assert t.met is True and t.spread <= 0.01 and 10 < n < 100
    # batches of a quarter of the samples so far; the one before the last had not met it
    ends = [10]
    while ends[-1] < n:
        ends.append(ends[-1] + max(1, ends[-1] // 4))
    assert ends[-1] == n
    assert timing.relative_spread(t.samples_us[: ends[-2]]) > 0.01


def test_stops_at_the_time_cap_and_says_the_target_was_not_met():
    clock = FakeClock()
    t = _adaptive(clock, [50.0, 150.0], target=0.01, min_samples=10, max_s=0.01)
    assert t.met is False and t.spread > 0.01
    # the cap is honoured to within one round, not one batch
    assert 0.01 <= clock.now <= 0.01 + 150e-6
    assert len(t.samples_us) == pytest.approx(0.01 / 100e-6, abs=2)


@settings(max_examples=60, deadline=None)
@given(
    durations=st.lists(st.floats(1.0, 1000.0), min_size=1, max_size=20),
    target=st.floats(0.001, 0.5),
    min_samples=st.integers(1, 30),
    max_ms=st.floats(0.1, 20.0),
)
def test_every_measurement_ends_met_or_capped(durations, target, min_samples, max_ms):
    clock = FakeClock()
    t = _adaptive(clock, durations, target=target, min_samples=min_samples, max_s=max_ms / 1e3)
    n = len(t.samples_us)
    assert n >= min_samples
    assert t.met == (t.spread <= target)
    if n > min_samples:  # sampling went on: the spread was above target before the last batch
        assert t.met or clock.now >= max_ms / 1e3
    if not t.met:
        assert clock.now >= max_ms / 1e3 or n == min_samples
    # the samples are the calls' own durations, in order
    assert list(t.samples_us) == pytest.approx(
        list(itertools.islice(itertools.cycle(durations), n))
    )


# ------------------------------------------------------------------------ interleaving


def test_pairs_alternate_a_and_b_and_give_the_ratio_of_each_round():
    clock, log = FakeClock(), []
    a = clock.call([200.0], log, "A")
    b = clock.call([100.0], log, "B")
    policy = timing.Adaptive(target=0.01, min_samples=6, max_s=1.0)
    pair = timing.time_pair(a, b, "cpu", policy, warmup=1, clock=clock)
    assert log == ["A", "B"] * 7  # one warm-up round, then six timed rounds
    assert pair.ratios == pytest.approx((2.0,) * 6) and pair.ratio == pytest.approx(2.0)
    assert pair.a.samples_us == pytest.approx((200.0,) * 6)
    assert pair.b.samples_us == pytest.approx((100.0,) * 6)
    assert pair.spread < 1e-9 and pair.met is True


def test_a_ratio_is_taken_per_round_so_drift_common_to_both_sides_cancels():
    # a clock that slows down 1% every round: both sides slow alike, the ratio stays put
    clock, rounds = FakeClock(), itertools.count()
    slow = []

    def a() -> None:
        slow.append(1.01 ** next(rounds))
        clock.now += 150e-6 * slow[-1]

    def b() -> None:
        clock.now += 100e-6 * slow[-1]

    pair = timing.time_pair(a, b, "cpu", timing.Adaptive(0.01, 10, 0.01), warmup=0, clock=clock)
    assert pair.ratio == pytest.approx(1.5) and pair.spread == pytest.approx(0.0, abs=1e-12)
    # ... while each side's own latency drifts: the pair keeps sampling until the cap and
    # says that its latencies did not meet the target
    assert pair.a.spread > 0.01 and pair.met is False and len(pair.ratios) > 10


def test_a_pair_stops_at_the_cap_when_the_ratio_stays_noisy():
    clock, rng = FakeClock(), random.Random(0)
    a = clock.call(rng.uniform(90.0, 110.0) for _ in itertools.count())
    b = clock.call([100.0])
    pair = timing.time_pair(a, b, "cpu", timing.Adaptive(0.001, 10, 0.02), warmup=0, clock=clock)
    assert pair.met is False and len(pair.ratios) == len(pair.a.samples_us) > 10
    lo, hi = pair.ratio_ci
    assert lo <= pair.ratio <= hi and pair.spread == pytest.approx((hi - lo) / 2 / pair.ratio)
    assert pair.spread > 0.001


def test_fixed_policy_takes_exactly_its_count_and_claims_no_target():
    calls = []
    t = timing.time_adaptive(lambda: calls.append(1), "cpu", timing.Fixed(7), warmup=2)
    assert len(t.samples_us) == 7 and len(calls) == 9 and t.target is None and t.met is None
    pair = timing.time_pair(lambda: None, lambda: None, "cpu", timing.Fixed(5), warmup=0)
    assert len(pair.ratios) == 5 and pair.met is None
    with pytest.raises(ValueError, match="samples"):
        timing.Fixed(0)


def test_graph_timing_is_a_cuda_option_only():
    pair = timing.time_pair(lambda: None, lambda: None, "cpu", timing.Fixed(3), graph=True)
    assert pair.a.timer == pair.b.timer == timing.TIMER_CPU == timing.timer_name("cpu", True)


@pytest.mark.gpu
def test_graph_timing_replays_each_call_from_its_own_graph():
    """Every sample is a replay of the captured call: its work happens once per sample (plus
    the warm-up and capture-warming calls run eagerly), and the rows say how it was timed."""
    import torch

    a = torch.zeros(1024, device="cuda")
    b = torch.zeros(1024, device="cuda")
    pair = timing.time_pair(lambda: a.add_(1), lambda: b.add_(2), "cuda", timing.Fixed(7),
                            warmup=2, graph=True)  # fmt: skip
    assert pair.a.timer == pair.b.timer == timing.TIMER_CUDA_GRAPH
    assert len(pair.ratios) == 7
    # 2 warm-up calls, 1 on the capture's side stream, 7 replays (capture itself runs nothing)
    assert a[0].item() == 10 and b[0].item() == 20
