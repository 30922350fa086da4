"""Timing helpers shared by the GEMM backends and the search.

CPU: ``time.perf_counter`` around each call. CUDA: a pair of CUDA events around each call,
with the L2 cache flushed (a write over a buffer larger than L2) before every call, so a
weight that fits in L2 is not served warm from the previous repeat. Both return every sample;
:func:`summarize` turns samples into the store's latency columns.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

TIMER_CPU = "perf_counter"
TIMER_CUDA = "cuda_event_l2flush"

# Bigger than any current GPU's L2 (H100/H200: 50-60 MB, B200: 126 MB).
_FLUSH_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Timing:
    """Samples of one timed configuration, in microseconds."""

    samples_us: tuple[float, ...]
    timer: str

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples_us)


def quantile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated quantile of an ascending list (numpy's default method)."""
    if not sorted_xs:
        raise ValueError("no samples")
    pos = q * (len(sorted_xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def summarize(t: Timing) -> dict:
    """The store's latency columns for ``t``: median, p25, p75, min, n_samples, timer."""
    xs = sorted(t.samples_us)
    return {
        "latency_us": quantile(xs, 0.5),
        "latency_p25_us": quantile(xs, 0.25),
        "latency_p75_us": quantile(xs, 0.75),
        "latency_min_us": xs[0],
        "n_samples": len(xs),
        "timer": t.timer,
    }


def time_cpu(fn: Callable[[], object], *, repeats: int, warmup: int = 1) -> Timing:
    """Time ``fn`` with perf_counter: ``warmup`` untimed calls, then ``repeats`` samples."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    return Timing(tuple(samples), TIMER_CPU)


_flush_buffer = None


def _flush_l2(torch) -> None:
    global _flush_buffer
    if _flush_buffer is None:
        # A normal tensor even when the first timing runs under inference mode: an inference
        # tensor could not be zeroed by a later timing outside it.
        with torch.inference_mode(False):
            _flush_buffer = torch.empty(_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    _flush_buffer.zero_()


def time_cuda(
    fn: Callable[[], object], *, repeats: int, warmup: int = 3, flush_l2: bool = True
) -> Timing:
    """Time ``fn`` on the current CUDA stream with one event pair per sample.

    The flush runs before the start event, so it is never inside a sample.
    """
    import torch

    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for i in range(repeats):
        if flush_l2:
            _flush_l2(torch)
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    samples = tuple(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends, strict=True))
    return Timing(samples, TIMER_CUDA)


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
