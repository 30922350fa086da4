"""How fast the paper matrix runs on this GPU: shards of its kernel cells, timed, extrapolated.

    python benchmarks/matrix_speed.py --shard 0/64 --limit 240 --results $OUT/r --compare 24

For each kernel task (tune, kernel-gemm, kernel-quant) runs ``run-matrix --preset paper
--task T --shard i/n`` as a user would (a subprocess, stopped with SIGINT at ``--limit``
seconds, which the runner survives: it records what finished), then reads the run's event
log (:mod:`slidesparse.results.runlog`). Prints per task: wall time, cells finished, the
share of wall time inside cells and where the rest went, cells per minute, and the
extrapolated time of all the preset's cells of that task on this GPU.

``--compare K`` then re-times K of the sparse kernel-gemm cells just run, in this process,
three times each against the same dense twin: adaptively (the default policy), with a fixed
``--fixed`` rounds, and adaptively again; prints the median |Δ| between the adaptive and
fixed speedups (target: within 1%) beside that between the two adaptive ones (the
run-to-run noise floor). Rows go to ``compare.jsonl`` (in ``--dump``, else the results).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slidesparse.report.speedups import extra_dict
from slidesparse.results.runlog import run_stats
from slidesparse.results.store import Store

TASKS = ("tune", "kernel-gemm", "kernel-quant")


def run_shard(preset: str, task: str, shard: str, results: Path, limit_s: float) -> dict:
    """Run one task's shard through the CLI; its wall time and the event log's accounting."""
    runs_before = set(results.glob("*/runs/*.jsonl"))
    cmd = [sys.executable, "-m", "slidesparse", "run-matrix", "--preset", preset, "--task",
           task, "--shard", shard, "--results", str(results), "--progress", "none"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=limit_s)
        stopped = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the runner flushes what finished and exits 130
        out, _ = proc.communicate()
        stopped = True
    wall = time.perf_counter() - t0
    logs = sorted(set(results.glob("*/runs/*.jsonl")) - runs_before)
    stats = run_stats(logs[-1]) if logs else None
    return {"task": task, "wall_s": wall, "stopped": stopped, "rc": proc.returncode,
            "stats": stats, "tail": out.strip().splitlines()[-3:]}  # fmt: skip


def preset_counts(preset: str, results: Path) -> dict[str, int]:
    """Cells of each task the full preset runs on this machine (rule skips left out)."""
    from slidesparse.run.runner import RunOptions, make_plan

    plan = make_plan(preset, RunOptions(results=results / "empty-for-plan"))
    counts: dict[str, int] = {}
    for cell in plan.to_run():
        counts[cell.task] = counts.get(cell.task, 0) + 1
    return counts


def vet_seconds(results: Path, task: str) -> float:
    """Seconds the task's cells spent vetting configurations (``extra.phase_s.vet``)."""
    store = Store(results)
    frame = store.read(store.gpu_tags()[0])
    rows = frame[frame["task"] == task].to_dict("records")
    phases = [extra_dict(r.get("extra")).get("phase_s") or {} for r in rows]
    return sum(float(p.get("vet", 0.0)) for p in phases)


def phases(results: Path, out: Path) -> None:
    """Where the kernel-gemm cells' time went (``extra.phase_s``), per backend; every row of
    the run also goes flat to ``out/rows.jsonl`` (the store's folders are deep)."""
    store = Store(results)
    frame = store.read(store.gpu_tags()[0])
    out.mkdir(parents=True, exist_ok=True)
    keep = ("task", "backend", "sparsity", "dtype", "model", "layer", "M", "N", "K", "status",
            "duration_s", "latency_us", "n_samples", "latency_spread", "spread_met")  # fmt: skip
    with open(out / "rows.jsonl", "w") as fh:
        for r in frame.to_dict("records"):
            row = {**{k: r.get(k) for k in keep}, "extra": extra_dict(r.get("extra"))}
            fh.write(json.dumps(row, default=str) + "\n")
    totals: dict[str, dict[str, float]] = {}
    for r in frame[frame["task"] == "kernel-gemm"].to_dict("records"):
        ph = extra_dict(r.get("extra")).get("phase_s") or {}
        if r.get("layer") == "total" or not ph:
            continue
        t = totals.setdefault(
            f"{r['backend']}/{'dense' if r['sparsity'] == 'dense' else 'sparse'}", {}
        )
        t["cell"] = t.get("cell", 0.0) + float(r.get("duration_s") or 0.0)
        t["n"] = t.get("n", 0) + 1
        for k, v in ph.items():
            t[k] = t.get(k, 0.0) + v
    for name, t in sorted(totals.items()):
        cell, n = t.pop("cell"), t.pop("n")
        parts = ", ".join(f"{k} {v / n:.3f}" for k, v in sorted(t.items(), key=lambda kv: -kv[1]))
        print(f"    {name}: {n} cells, {cell / n:.3f} s per cell; per phase s/cell: {parts}")


def compare(results: Path, k: int, fixed: int) -> list[dict]:
    """Adaptive vs fixed-count speedups of ``k`` sparse kernel-gemm cells, in this process."""
    from slidesparse.tasks import TaskContext, get_task

    store = Store(results)
    tag = store.gpu_tags()[0]
    frame = store.read(tag)
    frame = frame[(frame["task"] == "kernel-gemm") & (frame["status"] == "ok")]
    records = [{**r, "extra": extra_dict(r.get("extra"))} for r in frame.to_dict("records")]
    sparse = [r for r in records if r["sparsity"] != "dense" and "speedup_lo" in r["extra"]]
    step = max(1, len(sparse) // max(k, 1))
    picked = sparse[::step][:k]
    ctx = TaskContext(device="cuda", gpu_tag=tag, cache_dir=store.cache_dir(tag))
    run = get_task("kernel-gemm").fn
    out = []
    fixed_ctx = TaskContext(**{**ctx.__dict__, "fixed_samples": fixed})
    for r in picked:
        params = dict(r["extra"]["params"])
        dense = {**params, "sparsity": "dense", "backend": r["extra"]["dense_backend"]}
        run(dense, ctx)  # the twin the pairs interleave with
        # Adaptive, fixed, adaptive again: the second adaptive figure is the noise floor the
        # adaptive-vs-fixed difference is judged against.
        a, f, a2 = (run(params, c)[0]["extra"] for c in (ctx, fixed_ctx, ctx))
        sa, sf, sa2 = (e["speedup_vs_dense"] for e in (a, f, a2))
        out.append({"params": params, "adaptive": sa, "fixed": sf, "adaptive_again": sa2,
                    "adaptive_ci": [a["speedup_lo"], a["speedup_hi"]],
                    "rel_delta": abs(sa - sf) / sf, "rel_repeat": abs(sa - sa2) / sa2})  # fmt: skip
    return out


def main() -> None:
    """Run the shards, print the figures; optionally compare adaptive with fixed sampling."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--shard", default="0/64")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--limit", type=float, default=240.0, help="seconds per task's shard")
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--compare", type=int, default=0)
    ap.add_argument("--fixed", type=int, default=100, help="rounds of the fixed-count timing")
    ap.add_argument("--dump", type=Path, help="write rows and event logs here, flat")
    args = ap.parse_args()
    os.environ.setdefault("COLUMNS", "200")
    counts = preset_counts(args.preset, args.results)
    total_min, share_num, share_den = 0.0, 0.0, 0.0
    for task in args.tasks.split(","):
        res = run_shard(args.preset, task, args.shard, args.results, args.limit)
        s = res["stats"]
        if s is None or not s.cells:
            print(f"{task}: no cells ran (rc {res['rc']}): {' | '.join(res['tail'])}")
            continue
        rate = s.cells_per_minute().get(task) or 60.0 * s.cells / res["wall_s"]
        # Vetting runs once per GPU tag and configuration, not once per cell: it is left out
        # of the per-cell pace and added once.
        vet = vet_seconds(args.results, task)
        if vet and s.cells:
            rate = 60.0 * s.cells / (60.0 * s.cells / rate - vet)
        est = counts.get(task, 0) / rate + vet / 60.0
        total_min += est
        share_num += s.in_cells_s
        share_den += (s.wall_s or res["wall_s"]) * s.slots
        once = f" after {vet:.0f} s of one-time vetting" if vet else ""
        print(f"{task}: shard {args.shard}: {s.cells} cells in {res['wall_s']:.0f} s wall"
              f"{' (stopped at the limit)' if res['stopped'] else ''}, {s.share or 0:.0%} inside"
              f" cells; {rate:.1f} cells/min{once}"
              f" -> {counts.get(task, 0)} cells of the preset in {est:.1f} min")  # fmt: skip
        for line in s.details():
            print(f"    {line}")
    if share_den:
        print(f"kernel matrix extrapolated: {total_min:.1f} min on one GPU; "
              f"{share_num / share_den:.0%} of the shards' wall time inside cells")  # fmt: skip
    if args.dump:
        phases(args.results, args.dump)
        for log in args.results.glob("*/runs/*"):
            (args.dump / log.name).write_bytes(log.read_bytes())
    if args.compare:
        rows = compare(args.results, args.compare, args.fixed)
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (args.dump or args.results).mkdir(parents=True, exist_ok=True)
        ((args.dump or args.results) / "compare.jsonl").write_text(text)
        if rows:
            med = {k: statistics.median(r[k] for r in rows) for k in ("rel_delta", "rel_repeat")}
            outside = sum(not (r["adaptive_ci"][0] <= r["fixed"] <= r["adaptive_ci"][1])
                          for r in rows)  # fmt: skip
            print(f"adaptive vs fixed ({args.fixed} rounds) speedups on {len(rows)} sparse "
                  f"cells: median |Δ| {med['rel_delta']:.2%} (max "
                  f"{max(r['rel_delta'] for r in rows):.2%}); adaptive vs adaptive again: median "
                  f"|Δ| {med['rel_repeat']:.2%}; {outside} fixed outside the adaptive 95% "
                  "interval")  # fmt: skip


if __name__ == "__main__":
    main()
