"""What a run's event log says about its own wall time: how much of it the cells used.

The runner writes one JSONL event log per run (``<gpu_tag>/runs/<run_id>.jsonl``): a
``run_start``, a ``worker_start`` per worker, a ``cell_end`` per cell with the cell's own
``duration_s``, and a ``run_end`` with the run's wall time. A run that spends its wall time
outside cells (worker start, crash vetting, searches, flushes) shows it here as a low share:
``in_cells_s`` summed over the cells, over ``wall_s`` times the number of worker slots.
``run_start`` also holds what ``plan`` predicted for the run, so each run checks the
prediction: ``predicted_s`` against ``wall_s``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunStats:
    """One run's time accounting."""

    run_id: str
    cells: int  # cells that ran (skipped cells take no time and do not count)
    wall_s: float | None  # None: the run has no run_end (killed)
    in_cells_s: float
    slots: int  # worker slots that started (at least 1 when any cell ran)
    predicted_s: float | None = None  # plan's estimate at the start (None: not recorded)
    unestimated: int = 0  # cells the estimate had no history or cost model for

    @property
    def share(self) -> float | None:
        """Share of the workers' wall time spent inside cells (None without a wall time)."""
        if not self.wall_s or not self.slots:
            return None
        return min(1.0, self.in_cells_s / (self.wall_s * self.slots))

    def describe(self) -> str:
        """One line for ``slidesparse results``."""
        wall = "killed before its end" if self.wall_s is None else f"{self.wall_s:.0f} s wall"
        share = "" if self.share is None else f", {self.share:.0%} of it inside cells"
        workers = f" on {self.slots} worker{'s' if self.slots != 1 else ''}" if self.slots else ""
        return f"{self.run_id}: {self.cells} cells{workers}, {wall}{share}{self._prediction()}"

    def _prediction(self) -> str:
        if self.predicted_s is None or not self.cells:
            return ""
        gap = f" ({self.unestimated} cells unestimated)" if self.unestimated else ""
        text = f"; plan predicted {self.predicted_s:.0f} s{gap}"
        if self.wall_s and self.predicted_s > 0:
            text += f", actual / predicted {self.wall_s / self.predicted_s:.2f}"
        return text


def run_stats(path: Path) -> RunStats:
    """The time accounting of the event log at ``path`` (unreadable lines are skipped: a log
    cut short by a kill still counts what it holds)."""
    cells, in_cells, wall, slots = 0, 0.0, None, set()
    predicted, unestimated = None, 0
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if not isinstance(ev, dict):
            continue
        name = ev.get("event")
        if name == "run_start" and ev.get("predicted_s") is not None:
            predicted, unestimated = float(ev["predicted_s"]), int(ev.get("unestimated") or 0)
        elif name == "worker_start":
            slots.add(ev.get("slot"))
        elif name == "cell_end" and ev.get("status") != "skipped":
            cells += 1
            in_cells += float(ev.get("duration_s") or 0.0)
        elif name == "run_end":
            wall = float(ev.get("duration_s") or 0.0)
    n_slots = len(slots) or (1 if cells else 0)
    return RunStats(Path(path).stem, cells, wall, in_cells, n_slots, predicted, unestimated)
