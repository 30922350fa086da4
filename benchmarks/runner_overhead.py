"""Runner overhead: no-op cells per second through warm workers, dispatch and store included.

    python benchmarks/runner_overhead.py [--cells 2000] [--workers 1]

Each cell goes parent -> worker -> parent over the pipe protocol, becomes a store row, is
flushed to a Parquet part file (every second) and compacted at the end; the time includes
starting the workers. Target: >= 50 cells/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from slidesparse.results.store import Store
from slidesparse.run.runner import RunOptions, make_plan, run_plan


def main() -> None:
    """Run the benchmark and print cells per second."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rates = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "m.yaml").write_text(
                f"blocks: [{{task: noop, axes: {{count: {args.cells}}}}}]\n"
            )
            (root / "machine.json").write_text(
                json.dumps({"gpu_tag": "CPU_bench", "cc": None, "memory_bytes": None})
            )
            options = RunOptions(
                results=root / "results",
                machine_file=root / "machine.json",
                workers=args.workers,
                progress="none",
            )
            plan = make_plan(str(root / "m.yaml"), options)
            t0 = time.perf_counter()
            summary = run_plan(plan, options)
            elapsed = time.perf_counter() - t0
            assert summary.counts["ok"] == args.cells, summary.counts
            assert len(Store(options.results).read("CPU_bench")) == args.cells
            rates.append(args.cells / elapsed)
    rates.sort()
    median = rates[len(rates) // 2]
    print(
        f"runner overhead: {median:.0f} cells/s median over {args.repeats} runs "
        f"(min {rates[0]:.0f}, max {rates[-1]:.0f}); {args.cells} no-op cells, "
        f"{args.workers} worker(s), python {platform.python_version()}, "
        f"{platform.machine()}, timer perf_counter; target >= 50 cells/s"
    )


if __name__ == "__main__":
    main()
