"""What a run's event log says about its own wall time: how much of it the cells used, and
where the rest went.

The runner writes one JSONL event log per run (``<gpu_tag>/runs/<run_id>.jsonl``): a
``run_start``, per worker a ``worker_start`` and a ``worker_ready``, a ``cell_start`` (with
its worker slot) and a ``cell_end`` (with its task and the cell's own ``duration_s``) per
cell, and a ``run_end`` with the run's wall time. The share inside cells is ``in_cells_s``
summed over the cells, over ``wall_s`` times the number of worker slots. The rest is put
on each slot's timeline (:class:`Outside`): starting workers, the gaps between one cell's
end and the next one's start, a cell's round trip beyond its own ``duration_s``, and the
run's head and tail. ``run_start`` also holds what ``plan`` predicted for the run, so each
run checks the prediction: ``predicted_s`` against ``wall_s``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


@dataclass
class Outside:
    """Seconds of worker-slot time spent outside cells, by cause (summed over slots)."""

    worker_start: float = 0.0  # worker_start -> ready (imports, CUDA context, kernels)
    starts: int = 0  # workers started (more than the slots: replaced workers)
    between: float = 0.0  # an idle ready worker waiting for its next cell
    round_trip: float = 0.0  # cell_start -> cell_end beyond the cell's own duration_s
    head_tail: float = 0.0  # run_start -> first worker start, last cell end -> run_end

    def describe(self) -> str:
        """``worker start 12 s (2 starts), between cells 3 s, ...``; empty when nothing."""
        parts = [
            (f"worker start {self.worker_start:.1f} s ({self.starts} "
             f"start{'s' if self.starts != 1 else ''})", self.worker_start),
            (f"between cells {self.between:.1f} s", self.between),
            (f"cell round trips {self.round_trip:.1f} s", self.round_trip),
            (f"run start/end {self.head_tail:.1f} s", self.head_tail),
        ]  # fmt: skip
        return ", ".join(text for text, s in parts if s >= 0.05)


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
    outside: Outside = field(default_factory=Outside)
    per_task: dict[str, tuple[int, float]] = field(default_factory=dict)  # cells, in-cell s

    @property
    def share(self) -> float | None:
        """Share of the workers' wall time spent inside cells (None without a wall time)."""
        if not self.wall_s or not self.slots:
            return None
        return min(1.0, self.in_cells_s / (self.wall_s * self.slots))

    def cells_per_minute(self) -> dict[str, float]:
        """Per task: cells finished per minute of one worker's time inside that task's cells
        plus the task's part (by cell count) of the time outside cells."""
        if not self.wall_s or not self.cells:
            return {}
        outside = max(0.0, self.wall_s * self.slots - self.in_cells_s)
        out = {}
        for task, (n, secs) in self.per_task.items():
            spent = secs + outside * n / self.cells
            out[task] = 60.0 * n / spent if spent > 0 else float("inf")
        return out

    def describe(self) -> str:
        """One line for ``slidesparse results``."""
        wall = "killed before its end" if self.wall_s is None else f"{self.wall_s:.0f} s wall"
        share = "" if self.share is None else f", {self.share:.0%} of it inside cells"
        workers = f" on {self.slots} worker{'s' if self.slots != 1 else ''}" if self.slots else ""
        return f"{self.run_id}: {self.cells} cells{workers}, {wall}{share}{self._prediction()}"

    def details(self) -> list[str]:
        """Further lines: where the time outside cells went, and each task's pace."""
        lines = []
        if self.outside.describe():
            lines.append(f"outside cells: {self.outside.describe()}")
        rate = self.cells_per_minute()
        if rate:
            lines.append("cells per minute: " + ", ".join(
                f"{task} {rate[task]:.1f} ({self.per_task[task][0]} cells)" for task in rate
            ))  # fmt: skip
        return lines

    def _prediction(self) -> str:
        if self.predicted_s is None or not self.cells:
            return ""
        gap = f" ({self.unestimated} cells unestimated)" if self.unestimated else ""
        text = f"; plan predicted {self.predicted_s:.0f} s{gap}"
        if self.wall_s and self.predicted_s > 0:
            text += f", actual / predicted {self.wall_s / self.predicted_s:.2f}"
        return text


def _when(ev: dict) -> float | None:
    try:
        return datetime.fromisoformat(ev["t"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


class _Timeline:
    """Walks the events of each worker slot in order and charges the gaps to ``Outside``."""

    def __init__(self) -> None:
        self.out = Outside()
        self.run_start: float | None = None
        self.first_worker: float | None = None
        self.last_cell_end: float | None = None
        self.started: dict[object, float] = {}  # slot -> worker_start time, until ready
        self.idle: dict[object, float] = {}  # slot -> when it last became free
        self.cells: dict[object, tuple[object, float]] = {}  # cell_id -> (slot, start)
        self.running: dict[object, object] = {}  # slot -> the cell it started last

    def see(self, name: str, ev: dict, t: float | None) -> None:
        if t is None:
            return
        slot = ev.get("slot")
        if name == "run_start":
            self.run_start = t
        elif name == "worker_start":
            self.out.starts += 1
            self.started[slot] = t
            self.idle.pop(slot, None)
            if self.first_worker is None:
                self.first_worker = t
        elif name == "worker_ready" and slot in self.started:
            self.out.worker_start += t - self.started.pop(slot)
            self.idle[slot] = t
        elif name == "cell_start":
            if slot in self.started:  # a log without worker_ready: the start is up to here
                self.out.worker_start += t - self.started.pop(slot)
            elif slot in self.idle:
                self.out.between += t - self.idle.pop(slot)
            self.cells[ev.get("cell_id")] = (slot, t)
            self.running[slot] = ev.get("cell_id")
        elif name == "cell_end" and ev.get("cell_id") in self.cells:
            slot, begun = self.cells.pop(ev.get("cell_id"))
            self.out.round_trip += max(0.0, t - begun - float(ev.get("duration_s") or 0.0))
            # The runner sends a worker its next cell before it records the last one: then
            # the slot was never idle.
            if self.running.get(slot) == ev.get("cell_id"):
                self.idle[slot] = t
            self.last_cell_end = t
        elif name == "worker_exit":
            self.idle.pop(slot, None)
        elif name == "run_end":
            if self.run_start is not None and self.first_worker is not None:
                self.out.head_tail += self.first_worker - self.run_start
            if self.last_cell_end is not None:
                self.out.head_tail += t - self.last_cell_end


def run_stats(path: Path) -> RunStats:
    """The time accounting of the event log at ``path`` (unreadable lines are skipped: a log
    cut short by a kill still counts what it holds)."""
    cells, in_cells, wall, slots = 0, 0.0, None, set()
    predicted, unestimated = None, 0
    per_task: dict[str, tuple[int, float]] = {}
    line_ = _Timeline()
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if not isinstance(ev, dict):
            continue
        name = ev.get("event")
        line_.see(name, ev, _when(ev))
        if name == "run_start" and ev.get("predicted_s") is not None:
            predicted, unestimated = float(ev["predicted_s"]), int(ev.get("unestimated") or 0)
        elif name == "worker_start":
            slots.add(ev.get("slot"))
        elif name == "cell_end" and ev.get("status") != "skipped":
            cells += 1
            seconds = float(ev.get("duration_s") or 0.0)
            in_cells += seconds
            if ev.get("task"):
                n, s = per_task.get(ev["task"], (0, 0.0))
                per_task[ev["task"]] = (n + 1, s + seconds)
        elif name == "run_end":
            wall = float(ev.get("duration_s") or 0.0)
    n_slots = len(slots) or (1 if cells else 0)
    return RunStats(
        Path(path).stem, cells, wall, in_cells, n_slots, predicted, unestimated,
        line_.out, per_task,
    )  # fmt: skip
