"""What a speedup means: its ideal bound, % of that bound, efficiency vs 2:4, the suspect flag,
whether its interval holds 1.0, a model total's speedup, and which dense result is the
baseline.

Every place that turns latencies into a speedup (the kernel-gemm task, ``bench gemm``, the
reports) uses these, so "speedup", "suspect" and "efficiency" mean one thing kit-wide
(docs/method.md, "Speedups and bounds").
"""

from __future__ import annotations

from collections.abc import Sequence

from slidesparse.core.sparsity import ideal_speedup

# A speedup above ideal · SUSPECT_MARGIN breaks the L/(L-2) bound by more than timing noise:
# the dense baseline it was measured against is weak, so the figure is flagged, not reported.
SUSPECT_MARGIN = 1.03

# Dense backends in the order a report prefers them when two are equally fast; the fastest
# measured dense row of a (shape, dtype, M) is the baseline whatever its backend.
DENSE_PREFERENCE = ("cutlass", "cublaslt", "torch-builtin", "cpu-ref")


def ideal(pattern) -> float:
    """The ideal speedup L/(L-2) of a pattern over dense (1.0 for ``2_inf``)."""
    return ideal_speedup(pattern)


def speedup(dense_latency: float, sparse_latency: float) -> float:
    """Dense time over sparse time, both measured in the same run on the same GPU."""
    return dense_latency / sparse_latency


def total_speedup(dense_latencies: Sequence[float], speedups: Sequence[float]) -> float:
    """The speedup of a sum of GEMMs (a model total) from each one's dense latency d_i and
    speedup s_i: sum(d_i) / sum(d_i / s_i).

    It grows with every s_i, so the layers' interval bounds give the total's: the range the
    total takes while every layer's speedup stays inside its own interval.
    """
    return sum(dense_latencies) / sum(d / s for d, s in zip(dense_latencies, speedups, strict=True))


def within_noise(lo: float | None, hi: float | None) -> bool:
    """Whether a speedup's interval [lo, hi] holds 1.0: not distinguishable from no speedup."""
    return lo is not None and hi is not None and lo <= 1.0 <= hi


def pct_of_bound(value: float, pattern) -> float:
    """A speedup as a percentage of its ideal bound."""
    return 100.0 * value / ideal_speedup(pattern)


def is_suspect(value: float, pattern) -> bool:
    """True when ``value`` exceeds the ideal bound by more than the margin (weak baseline)."""
    return value > ideal_speedup(pattern) * SUSPECT_MARGIN


def efficiency_vs_2_4(value: float, speedup_2_4: float, pattern) -> float:
    """The paper's Eff_L = (S_L / S_2_4) / (0.5 · L/(L-2)): how much of 2:4's gain survives."""
    return (value / speedup_2_4) / (0.5 * ideal_speedup(pattern))


def backend_wins(latencies) -> list[dict]:
    """Which backend was fastest where several ran the same shape.

    ``latencies``: (group, shape, backend, latency) tuples, ``group`` being what a result is
    reported under (e.g. (dtype, "dense") or (dtype, pattern)), ``shape`` what makes two
    measurements comparable; a backend's fastest latency per shape counts. Returns one dict per
    (group, backend) with ``won`` (shapes where it was fastest), ``of`` (shapes measured on
    two or more backends) and ``vs_best``: the median, over those shapes, of its latency over
    the fastest other backend's (below 1: it wins by that much).
    """
    import statistics

    best: dict[tuple, dict] = {}
    for group, shape, backend, lat in latencies:
        by_backend = best.setdefault((group, shape), {})
        by_backend[backend] = min(lat, by_backend.get(backend, float("inf")))
    stats: dict[tuple, tuple[list, list]] = {}
    for (group, _), by_backend in best.items():
        if len(by_backend) < 2:
            continue
        for backend, lat in by_backend.items():
            other = min(v for b, v in by_backend.items() if b != backend)
            won, ratios = stats.setdefault((group, backend), ([], []))
            won.append(lat <= other)
            ratios.append(lat / other)
    return [
        {"group": g, "backend": b, "won": sum(w), "of": len(w), "vs_best": statistics.median(r)}
        for (g, b), (w, r) in sorted(stats.items(), key=lambda kv: str(kv[0]))
    ]


def total_row(rows: list[dict]) -> dict:
    """The model-total row: latency stats summed over the layer rows at the same M.

    Its spread is the layers' confidence half-widths summed over the summed median (the
    widest the sum's can be); where every layer was timed interleaved with the same dense
    backend, its speedup and interval combine the layers' (:func:`total_speedup`).
    """
    total = {k: rows[0][k] for k in ("model", "mode", "dtype", "out_dtype", "backend", "sparsity")}
    lat = sum(r["latency_us"] for r in rows)
    flops = sum(2.0 * r["M"] * r["N"] * r["K"] for r in rows)
    met = [r.get("spread_met") for r in rows]
    extra = {"layers": [r["layer"] for r in rows]}
    paired = [r["extra"] for r in rows if "speedup_lo" in r.get("extra", {})]
    if len(paired) == len(rows) and len({e["dense_backend"] for e in paired}) == 1:
        dense = [e["dense_latency_us"] for e in paired]
        keys = ("speedup_vs_dense", "speedup_lo", "speedup_hi")
        extra |= {k: total_speedup(dense, [e[k] for e in paired]) for k in keys}
        extra |= {"dense_latency_us": sum(dense), "dense_backend": paired[0]["dense_backend"]}
    total.update(
        layer="total",
        M=rows[0]["M"],
        kernel="+".join(sorted({str(r.get("kernel")) for r in rows})),
        latency_us=lat,
        latency_p25_us=sum(r["latency_p25_us"] for r in rows),
        latency_p75_us=sum(r["latency_p75_us"] for r in rows),
        latency_min_us=sum(r["latency_min_us"] for r in rows),
        n_samples=min(r["n_samples"] for r in rows),
        latency_spread=sum(r["latency_spread"] * r["latency_us"] for r in rows) / lat,
        spread_met=None if None in met else all(met),
        timer=rows[0]["timer"],
        tops=flops / (lat * 1e-6) / 1e12,
        correct=all(r["correct"] for r in rows),
        max_abs_err=max(r["max_abs_err"] for r in rows),
        baseline_suspect=any(bool(r.get("baseline_suspect")) for r in rows),
        extra=extra,
    )
    return total
