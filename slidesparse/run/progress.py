"""Progress display for the runner: a rich bar with ETA on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


class PlainProgress:
    """One line per finished cell (logs, CI, pipes): ``[done/total] status label time``."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.total = 0
        self.done = 0
        self.t0 = time.monotonic()

    def start(self, total: int) -> None:
        """Begin a run of ``total`` cells."""
        self.total = total
        self.t0 = time.monotonic()

    def _eta(self) -> str:
        if not self.done:
            return "?"
        left = (time.monotonic() - self.t0) / self.done * (self.total - self.done)
        return _fmt_seconds(left)

    def advance(self, label: str, status: str, duration_s: float, detail: str = "") -> None:
        """Report one finished cell."""
        self.done += 1
        extra = f" {detail}" if detail else ""
        self.stream.write(
            f"[{self.done}/{self.total}] {status:<7} {label} {duration_s:.2f}s "
            f"(eta {self._eta()}){extra}\n"
        )
        self.stream.flush()

    def note(self, text: str) -> None:
        """A message that is not about one cell (worker restarts, flushes that failed)."""
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End of the run."""


class RichProgress(PlainProgress):
    """A rich progress bar with counts and ETA; failures are printed above the bar."""

    def __init__(self, stream: TextIO | None = None):
        super().__init__(stream)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(file=self.stream)
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task_id: Any = None
        self.failed = 0

    def start(self, total: int) -> None:
        """Show the bar."""
        super().start(total)
        self.bar.start()
        self.task_id = self.bar.add_task("cells", total=total, failed=0)

    def advance(self, label: str, status: str, duration_s: float, detail: str = "") -> None:
        """Move the bar; print failed cells above it."""
        self.done += 1
        if status == "failed":
            self.failed += 1
            self.console.print(f"[red]failed[/red] {label}: {detail}", markup=True, highlight=False)
        self.bar.update(self.task_id, advance=1, failed=self.failed, description=label[:40])

    def note(self, text: str) -> None:
        """Print a message above the bar."""
        self.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        """Remove the bar."""
        self.bar.stop()


class NullProgress(PlainProgress):
    """No output (library use, tests)."""

    def advance(self, label: str, status: str, duration_s: float, detail: str = "") -> None:
        """Count only."""
        self.done += 1

    def note(self, text: str) -> None:
        """Drop the message."""


def make_progress(kind: str = "auto", stream: TextIO | None = None) -> PlainProgress:
    """``auto`` picks rich on a terminal and plain lines otherwise; also ``rich|plain|none``."""
    stream = stream or sys.stdout
    if kind == "auto":
        kind = "rich" if stream.isatty() else "plain"
    factory: dict[str, Callable[[TextIO], PlainProgress]] = {
        "rich": RichProgress,
        "plain": PlainProgress,
        "none": NullProgress,
    }
    return factory[kind](stream)


def _fmt_seconds(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


fmt_seconds = _fmt_seconds
