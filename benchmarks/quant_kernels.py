"""Tune and benchmark the quant kernels on the issue's target shapes; print the target table.

    python benchmarks/quant_kernels.py --out DIR [--tune] [--M 16384,65536] [--K 3584,18944]
        [--tune-kernels quant_slide]

With ``--tune`` the target cases are tuned first (configs saved to DIR/tuned/<gpu_tag>.json,
the file to ship in slidesparse/kernels/tuned/); the benchmark then runs with those configs.
Writes DIR/bench_rows.json and prints, per (M, K, out dtype): quant_only and dequant_bias as %
of the copy bandwidth measured in the same run, and every quant_slide / quant_only ratio next
to its ideal (the bytes ratio). Targets: >= 80 % of copy; 2_8 ratio <= 1.25.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import triton
from rich.console import Console

from slidesparse.core.atomic import atomic_write_text
from slidesparse.kernels import autotune, bench, tuning


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--M", default="16384,65536")
    ap.add_argument("--K", default="3584,18944")
    ap.add_argument("--rep-ms", type=int, default=100)
    ap.add_argument(
        "--tune-kernels",
        default="quant_only,quant_slide,dequant_bias",
        help="kernels to tune (comma-separated); the others keep their shipped configs",
    )
    args = ap.parse_args()
    Ms, Ks = _ints(args.M), _ints(args.K)
    console = Console(width=160)
    tag = tuning.current_gpu_tag()
    meta = {
        "gpu_tag": tag,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }
    console.print(meta)
    if args.tune:
        try:
            _tune(console, tag, args.out, Ks, Ms, args.tune_kernels.split(","))
        except Exception:  # the benchmark below still runs, with default configs
            console.print_exception()
    t0 = time.perf_counter()
    rows = bench.run_bench(Ms, Ks, rep_ms=args.rep_ms)
    console.print(bench.format_table(rows))
    console.print(f"benchmark took {time.perf_counter() - t0:.0f} s")
    atomic_write_text(
        args.out / "bench_rows.json",
        json.dumps({"meta": meta, "rows": rows}, indent=1, default=str),
    )
    _print_targets(console, rows)


def _tune(console, tag, out: Path, Ks, Ms, kernels: list[str]) -> None:
    t0 = time.perf_counter()
    cases = [c for c in autotune.cases_for(Ks, Ks, Ms) if c.kernel in kernels]
    entries = autotune.tune(cases)
    path = out / "tuned" / f"{tag}.json"
    tuning.save_entries(path, tag, entries)
    tuning.save_entries(out / "cache" / tuning.CACHE_FILE, tag, entries)
    tuning.use(tag, out / "cache")
    console.print(f"tuned {len(entries)} cases in {time.perf_counter() - t0:.0f} s -> {path}")
    for key, rec in entries.items():
        d = rec["default_latency_us"]
        fams = {k: round(v, 1) for k, v in rec.get("best_latency_us_by_family", {}).items()}
        console.print(
            f"  {key}: {rec['latency_us']:.1f} us (default {d and round(d, 1)}, "
            f"best per kernel {fams}) {rec['config']}"
        )


def _print_targets(console, rows) -> None:
    """One line per (M, K, out dtype): the numbers the issue's targets are about."""
    for r in rows:
        e = r["extra"]
        where = (
            f"M={r['M']} {'K' if r['K'] else 'N'}={r['K'] or r['N']} {r['dtype']}->{r['out_dtype']}"
        )
        if r["kernel"] in ("quant_only", "dequant_bias"):
            verdict = "PASS" if e["pct_of_copy"] >= 80 else "MISS"
            console.print(
                f"target {r['kernel']:<13} {where}: {e['pct_of_copy']:.1f}% of copy {verdict}"
            )
        else:
            bound = " (target <= 1.25: " + (
                "PASS)" if e["ratio_vs_quant_only"] <= 1.25 else "MISS)"
            )
            console.print(
                f"ratio  {r['sparsity']:<6} {where}: {e['ratio_vs_quant_only']:.3f} "
                f"ideal {e['ideal_ratio']:.3f}{bound if r['sparsity'] == '2_8' else ''}"
            )


if __name__ == "__main__":
    main()
