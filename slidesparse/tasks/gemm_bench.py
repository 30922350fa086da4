"""``bench gemm``: dense vs every 2_L pattern for one model (or square shapes), in one process.

:func:`run_bench` runs the ``kernel-gemm`` task for every (dtype, M, backend, pattern) and
returns its rows; :func:`speedup_table` turns rows into the comparison the paper reports:
per layer and model total, the dense latency (the strongest dense backend measured in the
same run), each pattern's latency, speedup, ideal bound L/(L-2), % of bound, efficiency vs
2_4 (docs/method.md, "GEMM backends and baselines") and achieved TOPS against the dense peak.

Dense cells run first; each sparse cell then re-times the strongest dense call interleaved
with its own (the kernel-gemm task), so its speedup is the median per-round ratio with a 95%
interval, not a ratio of two cells timed minutes apart at different clocks. A speedup whose
interval holds 1.0 is marked as within noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from slidesparse.core import metrics
from slidesparse.core.errors import Unsupported
from slidesparse.core.timing import DEFAULT_TARGET

# Published H100 PCIe model-total speedups (docs/method.md, "Published figures"):
# (setting) -> {pattern: x}.
PUBLISHED = {
    ("int8", "Qwen2.5-14B", 16384): {"2_4": 2.01, "2_6": 1.51, "2_8": 1.36, "2_10": 1.26},
    ("int8", "Qwen2.5-7B", 16384): {"2_4": 1.54, "2_6": 1.13, "2_8": 1.06, "2_10": 1.02},
    ("fp8", "Qwen2.5-7B", 16384): {"2_4": 1.74, "2_6": 1.30, "2_8": 1.19, "2_10": 1.02},
    ("fp8", "Qwen2.5-14B", 16384): {"2_4": 1.67, "2_6": 1.32, "2_8": 1.07, "2_10": 1.00},
    ("int8", "square", 16384): {"2_4": 1.79, "2_6": 1.18, "2_8": 1.33, "2_10": 1.03},
    ("fp8", "square", 16384): {"2_4": 1.73, "2_6": 1.12, "2_8": 1.08, "2_10": 1.02},
}


@dataclass(frozen=True)
class BenchPlan:
    """What one ``bench gemm`` invocation runs."""

    model: str | None  # None: square mode
    dtypes: tuple[str, ...]
    Ms: tuple[int, ...]
    patterns: tuple[str, ...]  # canonical names, "dense" included
    dense_backends: tuple[str, ...]
    sparse_backends: tuple[str, ...]

    def cells(self) -> list[dict]:
        """Task params: per dtype, the dense cells first (each sparse cell re-times the
        strongest of them interleaved with its own), then each (pattern, backend) over every
        M, so a prepared weight is reused across M before the worker's memo evicts it."""
        out = []
        mode = {"mode": "model", "model": self.model} if self.model else {"mode": "square"}
        for dtype in self.dtypes:
            for b in self.dense_backends:
                out += [{**mode, "dtype": dtype, "M": M, "backend": b, "sparsity": "dense"}
                        for M in self.Ms]  # fmt: skip
            for p in self.patterns:
                if p == "dense":
                    continue
                for b in self.sparse_backends:
                    out += [{**mode, "dtype": dtype, "M": M, "backend": b, "sparsity": p}
                            for M in self.Ms]  # fmt: skip
        return out


def run_bench(
    plan: BenchPlan,
    ctx,
    *,
    task: Callable | None = None,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run every cell of ``plan`` in this process; unsupported cells become skipped rows."""
    if task is None:
        from slidesparse.tasks import get_task

        task = get_task("kernel-gemm").fn
    rows: list[dict] = []
    for params in plan.cells():
        try:
            new = task(params, ctx)
        except Unsupported as exc:
            new = [{**params, "status": "skipped", "error_message": exc.reason}]
        except RuntimeError as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            new = [{**params, "status": "failed", "error_message": msg}]
        for r in new:
            r.setdefault("status", "ok")
            rows.append(r)
            if on_row:
                on_row(r)
    return rows


def _ok(rows: Iterable[dict]) -> list[dict]:
    return [r for r in rows if r.get("status", "ok") == "ok" and r.get("latency_us")]


def speedup_table(rows: list[dict], peaks: dict[str, float] | None = None) -> list[dict]:
    """One line per (dtype, M, layer, pattern) with dense latency, speedup and bounds.

    The baseline is the fastest correct dense row of the same (dtype, M, layer): the
    strongest measured in the same run. The sparse latency is the fastest correct sparse
    backend's. Where that sparse row was timed interleaved with the baseline's backend, its
    speedup is the pair's (median ratio, with ``speedup_lo``/``speedup_hi`` its 95% interval,
    ``noise`` when that holds 1.0) and ``dense_us`` the dense side of the pair; otherwise the
    ratio of the two rows' medians, without an interval. ``peaks`` maps dtype -> dense peak
    TOPS for the "% of peak" column.
    """
    ok = [r for r in _ok(rows) if r.get("correct", True)]
    dense: dict[tuple, dict] = {}
    sparse: dict[tuple, dict] = {}
    for r in ok:
        key = (r["dtype"], r["M"], r.get("layer") or f"{r['N']}x{r['K']}")
        table = dense if r["sparsity"] == "dense" else sparse
        k = key if r["sparsity"] == "dense" else (*key, r["sparsity"])
        if k not in table or r["latency_us"] < table[k]["latency_us"]:
            table[k] = r
    out = []
    s24: dict[tuple, float] = {}
    for (dtype, M, layer, pattern), r in sorted(sparse.items(), key=_order):
        d = dense.get((dtype, M, layer))
        line = {
            "dtype": dtype,
            "M": M,
            "layer": layer,
            "pattern": pattern,
            "sparse_us": r["latency_us"],
            "sparse_backend": r["backend"],
            "ideal": metrics.ideal(pattern),
            "tops": r.get("tops"),
        }
        if d is not None:
            sp, lo, hi, dense_us = _paired(r, d)
            line |= {
                "dense_us": dense_us,
                "dense_backend": d["backend"],
                "speedup": sp,
                "speedup_lo": lo,
                "speedup_hi": hi,
                "noise": metrics.within_noise(lo, hi),
                "pct_of_bound": metrics.pct_of_bound(sp, pattern),
                "suspect": metrics.is_suspect(sp, pattern),
                "dense_tops": d.get("tops"),
            }
            if pattern == "2_4":
                s24[(dtype, M, layer)] = sp
        if peaks and dtype in peaks and r.get("tops"):
            line["pct_of_peak"] = 100.0 * r["tops"] / peaks[dtype]
        out.append(line)
    for line in out:
        base = s24.get((line["dtype"], line["M"], line["layer"]))
        if base and line.get("speedup") and line["pattern"] != "2_inf":
            line["eff_vs_2_4"] = metrics.efficiency_vs_2_4(line["speedup"], base, line["pattern"])
    return out


def _paired(sparse: dict, dense: dict) -> tuple[float, float | None, float | None, float]:
    """(speedup, lo, hi, dense µs) of a sparse row over a dense row (see speedup_table)."""
    e = sparse.get("extra") or {}
    if e.get("speedup_lo") is not None and e.get("dense_backend") == dense["backend"]:
        return e["speedup_vs_dense"], e["speedup_lo"], e["speedup_hi"], e["dense_latency_us"]
    speedup = metrics.speedup(dense["latency_us"], sparse["latency_us"])
    return speedup, None, None, dense["latency_us"]


_PATTERN_ORDER = {f"2_{L}": L for L in range(4, 17, 2)} | {"2_inf": 99}
_LAYER_ORDER = {"qkv": 0, "o": 1, "gate_up": 2, "down": 3, "total": 4}


def _order(item):
    (dtype, M, layer, pattern), _ = item
    return (dtype, M, _LAYER_ORDER.get(layer, 5), layer, _PATTERN_ORDER.get(pattern, 100))


def format_table(lines: list[dict]) -> str:
    """A plain-text table of :func:`speedup_table` lines: the speedup with its 95% interval
    where it has one, flagged ``~1.0 (within noise)`` where that interval holds 1.0."""
    head = (
        f"{'dtype':5} {'M':>6} {'layer':8} {'pat':6} {'dense_us':>10} {'sparse_us':>10} "
        f"{'speedup (95% CI)':>21} {'ideal':>5} {'%bound':>6} {'eff24':>5} {'TOPS':>7} "
        f"{'dTOPS':>7} flag"
    )
    out = [head]
    for x in lines:
        flags = ["SUSPECT"] if x.get("suspect") else []
        flags += ["~1.0 (within noise)"] if x.get("noise") else []
        speedup = format_speedup(x.get("speedup"), x.get("speedup_lo"), x.get("speedup_hi"))
        out.append(
            f"{x['dtype']:5} {x['M']:>6} {x['layer']:8} {x['pattern']:6} "
            f"{_f(x.get('dense_us'), 10, 1)} {_f(x.get('sparse_us'), 10, 1)} "
            f"{speedup:>21} {_f(x.get('ideal'), 5, 2)} "
            f"{_f(x.get('pct_of_bound'), 6, 1)} {_f(x.get('eff_vs_2_4'), 5, 2)} "
            f"{_f(x.get('tops'), 7, 0)} {_f(x.get('dense_tops'), 7, 0)} "
            f"{', '.join(flags)}".rstrip()
        )
    return "\n".join(out)


def format_speedup(speedup: float | None, lo: float | None, hi: float | None) -> str:
    """``1.234 (1.201–1.262)``; the bare value without an interval; ``-`` without a value."""
    if speedup is None:
        return "-"
    if lo is None or hi is None:
        return f"{speedup:.3f}"
    return f"{speedup:.3f} ({lo:.3f}–{hi:.3f})"


def _f(v, w: int, d: int) -> str:
    return f"{v:>{w}.{d}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"


def published_comparison(lines: list[dict], model: str | None) -> str:
    """Side-by-side model-total (or square) speedups: ours vs the authors' H100 figures."""
    out = [f"{'setting':34} {'pat':5} {'ours':>6} {'paper':>6}"]
    for line in lines:
        if model and line["layer"] != "total":
            continue
        setting = (line["dtype"], model or "square", line["M"])
        ref = PUBLISHED.get(setting, {}).get(line["pattern"])
        if ref is None:
            continue
        ours = line.get("speedup")
        name = f"{line['dtype']} {model or 'square'} M={line['M']}"
        out.append(f"{name:34} {line['pattern']:5} {_f(ours, 6, 2)} {ref:>6.2f}")
    return "\n".join(out)


def searched_call(ctx, backend: str, dtype: str, pattern, N: int, K: int, M: int, *, seed=0):
    """A ready-to-time call of ``backend`` on fresh operands, in the configuration its search
    stored in ``ctx``'s cache (the library's first candidate when none is stored).

    For re-timing outside the task (paired A/B checks, sustained power runs, profilers):
    the operands are drawn as the task draws them, so the call does the same work.
    """
    from slidesparse import gemm
    from slidesparse.core import dtypes
    from slidesparse.gemm import operands
    from slidesparse.gemm.search import cache_key
    from slidesparse.tasks.kernel_gemm import search_cache

    out_dtype = dtypes.DEFAULT_OUT_DTYPE[dtype]
    w_values = operands.pruned_weight(N, K, dtype, pattern, seed=seed, device=ctx.device)
    x_values = operands.random_values((M, K), dtype, seed=seed + 1, device=ctx.device)
    be = gemm.make_backend(gemm.get_spec(backend), ctx.device, pattern)
    w = be.prepare_weight(w_values, pattern, dtype, out_dtype)
    del w_values
    inp = be.prepare_input(x_values, w)
    hit = search_cache(ctx).get(cache_key(backend, dtype, out_dtype, pattern.name, N, K, M))
    config = hit["config"] if hit else be.candidates(w, inp)[0]
    return be.make_call(w, inp, config), be.describe(w, config)


def bench_context(cache_dir: Path | None = None, *, target_spread: float = DEFAULT_TARGET):
    """A TaskContext for in-process benchmarking on this machine (GPU when there is one),
    timing to ``target_spread``."""
    import torch

    from slidesparse.core.hardware import gpu_tag
    from slidesparse.tasks import TaskContext

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tag = gpu_tag()
    root = cache_dir or Path.home() / ".cache" / "slidesparse"
    return TaskContext(
        device=device, gpu_tag=tag, cache_dir=Path(root) / tag, target_spread=target_spread
    )


def backend_comparison(rows: list[dict]) -> str:
    """Where several backends ran the same shape: how often each was fastest and its median
    latency over the best other backend's (:func:`slidesparse.core.metrics.backend_wins`),
    plus the model total of each backend alone."""
    ok = [r for r in rows if r.get("status", "ok") == "ok" and r.get("latency_us") is not None]
    layers = [r for r in ok if r.get("layer") != "total"]
    wins = metrics.backend_wins(
        ((r["dtype"], r["sparsity"]), (r.get("model"), r.get("layer"), r["M"], r["N"], r["K"]),
         r["backend"], r["latency_us"])
        for r in layers
    )  # fmt: skip
    if not wins:
        return ""
    out = [f"{'dtype':<6} {'side':<6} {'backend':<16} {'fastest':>8} {'vs best other':>14}"]
    for w in wins:
        (dtype, side), frac = w["group"], f"{w['won']}/{w['of']}"
        out.append(f"{dtype:<6} {side:<6} {w['backend']:<16} {frac:>8} {w['vs_best']:>14.3f}")
    totals = [r for r in ok if r.get("layer") == "total"]
    if totals:
        out.append(f"{'dtype':<6} {'M':>6} {'side':<6} {'backend':<16} {'model total us':>15}")
        for r in sorted(totals, key=lambda r: (r["dtype"], r["M"], r["sparsity"], r["backend"])):
            out.append(f"{r['dtype']:<6} {r['M']:>6} {r['sparsity']:<6} {r['backend']:<16} "
                       f"{r['latency_us']:>15.1f}")  # fmt: skip
    return "\n".join(out)
