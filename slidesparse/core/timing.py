"""Timing helpers shared by the GEMM backends, the search, the quant kernels and the engine.

CPU: a clock (``time.perf_counter`` unless one is injected) around each call. CUDA: a pair
of CUDA events around each call, with the L2 cache flushed (a write over a buffer larger than
L2) before every call, so a weight that fits in L2 is not served warm from the previous
repeat. Every timer returns every sample; :func:`summarize` turns samples into the store's
latency columns.

Two ways to decide how many samples to take:

* a fixed count (:func:`time_fn`, :func:`repeats_for`): the algorithm searches, which only
  rank candidates;
* adaptive (:func:`time_adaptive`, :func:`time_pair`): every measurement a row reports. It
  samples in batches until the *spread* of the median is at most a target (default
  :data:`DEFAULT_TARGET`, 1%), after at least ``min_samples`` and for at most ``max_s``
  seconds; the :class:`Timing` keeps the target, so its spread and whether it was met go
  into the row.

The spread (:func:`relative_spread`) is the half-width of the distribution-free 95%
confidence interval of the median, over the median: the interval between two order
statistics whose ranks come from Binomial(n, 1/2) (:func:`median_ci`). Why this one: it is
about the median, the figure every row reports; it assumes no distribution (GPU timings are
skewed, with clock dips and preemption in the tail, so a normal-theory interval would be
wrong); a few outliers do not widen it; and it shrinks like 1/sqrt(n), so a target is
reached by sampling more instead of never. A ratio's spread is the same statistic over the
per-round ratios, so "speedup 1.02, 95% CI 0.99-1.05" is a statement about the median ratio.

:func:`time_pair` times two calls alternately (A, B, A, B, ...): clocks that drift under a
power cap move both sides alike, and the ratio A/B of each round cancels the drift that a
dense baseline timed minutes before its sparse partner would carry into the speedup.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TIMER_CPU = "perf_counter"
TIMER_CUDA = "cuda_event_l2flush"
# Each call replayed from its own CUDA graph, L2 flushed before each replay (time_pair's graph).
TIMER_CUDA_GRAPH = "cuda_graph_event_l2flush"

# Up to this M a launch is short enough (H200: below ~50 µs) that eager timings measure the
# host's launch latency, not the GPU: two tuning runs on one H200 gave quant_only at M=64,
# K=3584 4.3 and 39.2 µs, and the engine's router, timing eagerly, sent the decode gate_up
# to cuBLASLt + dequant where CUTLASS was the faster in the graphed step. Cases up to here
# are timed from CUDA graphs (as the engine's decode runs them).
GRAPH_MAX_M = 8192

# The spread of the median an adaptive measurement aims for, as a fraction of the median.
DEFAULT_TARGET = 0.01
_CONFIDENCE = 0.95

# Bigger than any current GPU's L2 (H100/H200: 50-60 MB, B200: 126 MB).
_FLUSH_BYTES = 256 * 1024 * 1024

Clock = Callable[[], float]  # seconds, monotonic
Rounds = list[tuple[float, ...]]  # one sample (µs) per timed call, per round


@dataclass(frozen=True)
class Adaptive:
    """When an adaptive measurement stops: once the spread of its median is at most
    ``target`` (with at least ``min_samples`` samples), or once ``max_s`` seconds of
    sampling are spent, whichever comes first; ``min_samples`` are taken even past the cap."""

    target: float = DEFAULT_TARGET
    min_samples: int = 10
    max_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.target > 0:
            raise ValueError(f"Adaptive.target must be > 0, got {self.target!r}")
        if self.min_samples < 1:
            raise ValueError(f"Adaptive.min_samples must be >= 1, got {self.min_samples!r}")
        if not self.max_s > 0:
            raise ValueError(f"Adaptive.max_s must be > 0, got {self.max_s!r}")


@dataclass(frozen=True)
class Fixed:
    """A fixed number of samples instead of adaptive sampling: the seeds' way, kept so the
    two can be compared on the same cells (``benchmarks/matrix_speed.py``)."""

    samples: int

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"Fixed.samples must be >= 1, got {self.samples!r}")


Policy = Adaptive | Fixed


def _target(policy: Policy) -> float | None:
    return policy.target if isinstance(policy, Adaptive) else None


@dataclass(frozen=True)
class Timing:
    """Samples of one timed configuration, in microseconds, and the spread target they were
    sampled to (None: a fixed count)."""

    samples_us: tuple[float, ...]
    timer: str
    target: float | None = None

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples_us)

    @property
    def spread(self) -> float:
        """Relative spread of the median (:func:`relative_spread`)."""
        return relative_spread(self.samples_us)

    @property
    def met(self) -> bool | None:
        """Whether the spread reached the target; None for a fixed-count timing."""
        return None if self.target is None else self.spread <= self.target


@dataclass(frozen=True)
class Pair:
    """Two calls timed alternately, and ``ratios`` = A / B of every round: the speedup of B
    over A (B's speedup over the dense A when A is the dense baseline)."""

    a: Timing
    b: Timing
    ratios: tuple[float, ...]

    @property
    def ratio(self) -> float:
        """The median per-round ratio."""
        return statistics.median(self.ratios)

    @property
    def ratio_ci(self) -> tuple[float, float]:
        """The 95% confidence interval of the median ratio (:func:`median_ci`)."""
        return median_ci(self.ratios)

    @property
    def spread(self) -> float:
        """Relative spread of the median ratio."""
        return relative_spread(self.ratios)

    @property
    def met(self) -> bool | None:
        """Whether the ratio and both latencies reached the target (None: a fixed count)."""
        target = self.a.target
        if target is None:
            return None
        return max(self.spread, self.a.spread, self.b.spread) <= target


def quantile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated quantile of an ascending list (numpy's default method)."""
    if not sorted_xs:
        raise ValueError("no samples")
    pos = q * (len(sorted_xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


@functools.lru_cache(maxsize=4096)
def _ci_rank(n: int) -> int:
    """The 0-based k such that [x_(k), x_(n-1-k)] of n sorted samples is the narrowest pair of
    order statistics that holds the median with probability >= 95%.

    The median lies below x_(k) only if at most k samples are below it, which happens with
    probability P(B <= k), B ~ Binomial(n, 1/2); the same holds above x_(n-1-k). The largest
    k with P(B <= k) <= 2.5% is the answer. Below 6 samples no pair reaches 95%: the range
    (k = 0) is the widest there is.
    """
    tail = (1 - _CONFIDENCE) / 2
    log_pmf = -n * math.log(2)  # log P(B = 0); logs, since 2^-n underflows past n = 1074
    cdf, k = 0.0, 0
    for i in range((n + 1) // 2):
        cdf += math.exp(log_pmf)
        if cdf > tail:
            break
        k = i
        log_pmf += math.log((n - i) / (i + 1))
    return k


def median_ci(xs: Sequence[float]) -> tuple[float, float]:
    """The distribution-free 95% confidence interval of the median of ``xs`` (see
    :func:`_ci_rank`); the range of the samples when there are fewer than 6."""
    if not xs:
        raise ValueError("no samples")
    s = sorted(xs)
    k = _ci_rank(len(s))
    return s[k], s[len(s) - 1 - k]


def relative_spread(xs: Sequence[float]) -> float:
    """Half the width of the median's 95% confidence interval over the median (0.01: the
    median is known to about ±1%); infinite for one sample, which says nothing about its
    spread. The module docstring says why this statistic."""
    if len(xs) < 2:
        return math.inf
    lo, hi = median_ci(xs)
    if hi == lo:
        return 0.0
    median = statistics.median(xs)
    return (hi - lo) / (2 * median) if median > 0 else math.inf


def summarize(t: Timing) -> dict:
    """The store's latency columns for ``t``: median, p25, p75, min, n_samples, timer, and the
    relative spread of the median with whether it met the target (None: a fixed count)."""
    xs = sorted(t.samples_us)
    return {
        "latency_us": quantile(xs, 0.5),
        "latency_p25_us": quantile(xs, 0.25),
        "latency_p75_us": quantile(xs, 0.75),
        "latency_min_us": xs[0],
        "n_samples": len(xs),
        "timer": t.timer,
        "latency_spread": t.spread,
        "spread_met": t.met,
    }


# ------------------------------------------------------------------------ sampling rounds


def _rounds_cpu(fns: Sequence[Callable[[], object]], n: int, clock: Clock) -> Rounds:
    out = []
    for _ in range(n):
        row = []
        for fn in fns:
            t0 = clock()
            fn()
            row.append((clock() - t0) * 1e6)
        out.append(tuple(row))
    return out


_flush_buffer = None


def _flush_l2(torch) -> None:
    global _flush_buffer
    if _flush_buffer is None:
        # A normal tensor even when the first timing runs under inference mode: an inference
        # tensor could not be zeroed by a later timing outside it.
        with torch.inference_mode(False):
            _flush_buffer = torch.empty(_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    _flush_buffer.zero_()


def _rounds_cuda(fns: Sequence[Callable[[], object]], n: int, flush_l2: bool = True) -> Rounds:
    """``n`` rounds on the current stream, one event pair per call, one synchronize at the
    end. The flush runs before each start event, so it is never inside a sample."""
    import torch

    events = [
        [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in fns]
        for _ in range(n)
    ]
    for row in events:
        for fn, (start, end) in zip(fns, row, strict=True):
            if flush_l2:
                _flush_l2(torch)
            start.record()
            fn()
            end.record()
    torch.cuda.synchronize()
    return [tuple(s.elapsed_time(e) * 1e3 for s, e in row) for row in events]


def _rounds(fns, device: str, n: int, clock: Clock) -> Rounds:
    return _rounds_cuda(fns, n) if device == "cuda" else _rounds_cpu(fns, n, clock)


def timer_name(device: str, graph: bool = False) -> str:
    """The timer a measurement on ``device`` records (``graph``: CUDA-graph replays)."""
    if device != "cuda":
        return TIMER_CPU
    return TIMER_CUDA_GRAPH if graph else TIMER_CUDA


def graphed(fn: Callable[[], object]) -> Callable[[], None]:
    """``fn`` captured into a CUDA graph: its replay, which launches the whole call at once (no
    host launch cost between its kernels). Warmed first on a side stream, as capture needs
    (lazily created workspaces and handles must exist before it). The replay keeps the graph,
    and with it the graph's memory pool, alive."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def _warm(fns: Sequence[Callable[[], object]], warmup: int) -> None:
    for _ in range(warmup):
        for fn in fns:
            fn()


# ------------------------------------------------------------------------ fixed counts


def time_many(
    fns: Sequence[Callable[[], object]],
    device: str,
    *,
    samples: int = 2,
    warmup: int = 1,
    clock: Clock = time.perf_counter,
) -> list[Timing]:
    """Each of ``fns`` timed ``samples`` times, interleaved (every round calls each once), with
    one synchronize for the whole batch: a search's quick first pass over a hundred
    configurations, where a synchronize and the timing calls per configuration cost more
    than the small GEMMs themselves. A clock dip lands in one round, not in every sample of
    a configuration."""
    _warm(fns, warmup)
    rounds = _rounds(fns, device, samples, clock)
    timer = timer_name(device)
    return [Timing(tuple(r[i] for r in rounds), timer) for i in range(len(fns))]


def time_cpu(
    fn: Callable[[], object], *, repeats: int, warmup: int = 1, clock: Clock = time.perf_counter
) -> Timing:
    """Time ``fn`` with ``clock``: ``warmup`` untimed calls, then ``repeats`` samples."""
    _warm([fn], warmup)
    return Timing(tuple(r[0] for r in _rounds_cpu([fn], repeats, clock)), TIMER_CPU)


def time_cuda(
    fn: Callable[[], object], *, repeats: int, warmup: int = 3, flush_l2: bool = True
) -> Timing:
    """Time ``fn`` on the current CUDA stream with one event pair per sample."""
    _warm([fn], warmup)
    return Timing(tuple(r[0] for r in _rounds_cuda([fn], repeats, flush_l2)), TIMER_CUDA)


def time_fn(fn: Callable[[], object], device: str, *, repeats: int, warmup: int = 2) -> Timing:
    """Time ``fn`` with the timer that suits ``device`` ("cpu" or "cuda")."""
    if device == "cuda":
        return time_cuda(fn, repeats=repeats, warmup=warmup)
    return time_cpu(fn, repeats=repeats, warmup=warmup)


def repeats_for(estimate_us: float, *, budget_us: float, lo: int, hi: int) -> int:
    """How many samples fit ``budget_us`` given one call takes about ``estimate_us``."""
    if estimate_us <= 0:
        return hi
    return max(lo, min(hi, int(budget_us / estimate_us)))


# ------------------------------------------------------------------------ adaptive


def sample_adaptive(
    take: Callable[[int], Rounds],
    spread: Callable[[Rounds], float],
    policy: Policy,
    clock: Clock = time.perf_counter,
) -> Rounds:
    """Rounds from ``take(n)`` until ``spread(rounds) <= policy.target`` or the time cap
    (a :class:`Fixed` policy: exactly its count).

    The first batch is ``min_samples`` rounds; each later one adds a quarter of the rounds so
    far (so the spread is computed O(log n) times), shortened to what the time left allows at
    the rate seen so far, so the cap is overrun by about one round, not one batch.
    """
    if isinstance(policy, Fixed):
        return list(take(policy.samples))
    start = clock()
    rounds: Rounds = list(take(policy.min_samples))
    while spread(rounds) > policy.target:
        elapsed = clock() - start
        if elapsed >= policy.max_s:
            break
        n = max(1, len(rounds) // 4)
        if elapsed > 0:
            n = min(n, max(1, int((policy.max_s - elapsed) * len(rounds) / elapsed)))
        rounds += take(n)
    return rounds


def time_adaptive(
    fn: Callable[[], object],
    device: str,
    policy: Policy,
    *,
    warmup: int = 2,
    clock: Clock = time.perf_counter,
) -> Timing:
    """Time ``fn`` until the spread of its median meets ``policy`` (see :class:`Adaptive`).

    ``clock`` times the CPU samples and the cap; CUDA samples come from events.
    """
    _warm([fn], warmup)
    rounds = sample_adaptive(
        lambda n: _rounds([fn], device, n, clock),
        lambda rs: relative_spread([r[0] for r in rs]),
        policy,
        clock,
    )
    return Timing(tuple(r[0] for r in rounds), timer_name(device), _target(policy))


def time_pair(
    fn_a: Callable[[], object],
    fn_b: Callable[[], object],
    device: str,
    policy: Policy,
    *,
    warmup: int = 2,
    clock: Clock = time.perf_counter,
    graph: bool = False,
) -> Pair:
    """Time ``fn_a`` and ``fn_b`` alternately (A, B, A, B, ...) until the spread of the median
    ratio A/B, and of each side's median latency, meets ``policy``. ``graph`` (CUDA only):
    each is captured into a CUDA graph and its replays are timed, so a short call is measured
    by the GPU's time rather than the host's launches (see :data:`GRAPH_MAX_M`)."""
    _warm([fn_a, fn_b], warmup)
    graph = graph and device == "cuda"
    if graph:
        fn_a, fn_b = graphed(fn_a), graphed(fn_b)

    def spread(rounds: Rounds) -> float:
        a, b = zip(*rounds, strict=True)
        ratio = relative_spread([x / y for x, y in rounds])
        return max(ratio, relative_spread(a), relative_spread(b))

    rounds = sample_adaptive(
        lambda n: _rounds([fn_a, fn_b], device, n, clock), spread, policy, clock
    )
    timer = timer_name(device, graph)
    return Pair(
        Timing(tuple(r[0] for r in rounds), timer, _target(policy)),
        Timing(tuple(r[1] for r in rounds), timer, _target(policy)),
        tuple(a / b for a, b in rounds),
    )


class Phases:
    """Seconds a cell spends in each of its named phases (a row's ``extra.phase_s``): where
    a slow cell's time goes. On CUDA each phase ends with a synchronize, so work a phase
    queued is charged to it, not to the next."""

    def __init__(self, device: str, clock: Clock = time.perf_counter):
        self.device, self.clock = device, clock
        self.seconds: dict[str, float] = {}
        self._last = clock()

    def mark(self, name: str) -> None:
        """End the current phase, charging the time since the last mark to ``name``."""
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
        now = self.clock()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._last, 4)
        self._last = now
