"""The matrix runner: plan cells against the store, run them in isolated workers, record all.

Every cell runs in a worker subprocess (:mod:`slidesparse.run.worker`), one per GPU, pinned with
``CUDA_VISIBLE_DEVICES`` and kept warm across cells. A worker that dies (abort, segfault,
sticky CUDA error, OOM kill) or overruns its cell's timeout is replaced and the cell recorded
as failed with an error class; the run goes on. Rows are flushed to the store in small atomic
part files, so a killed runner loses at most the cells of the last flush interval, which
simply run again on resume. The parent never imports ``torch.cuda``.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slidesparse.core.errors import UserError
from slidesparse.core.hardware import MachineRecord, detect_machine_isolated
from slidesparse.results.store import KEY_COLUMNS, Store, StoreWarning, latest_per_cell, new_run_id
from slidesparse.run.matrix import Cell, estimate_seconds, expand, load_matrix, shard
from slidesparse.run.pool import PoolConfig, dispatch, gpu_slots
from slidesparse.run.progress import PlainProgress, make_progress
from slidesparse.run.rules import apply_rules, load_rules
from slidesparse.tasks import get_task, task_names

# Params that map straight onto store columns when the task's own row leaves them out.
_PARAM_COLUMNS = (*(c for c in KEY_COLUMNS if c not in ("gpu_tag", "task")), "kernel")


@dataclass
class RunOptions:
    """Everything ``run-matrix`` / ``plan`` can be told."""

    results: Path = Path("results")
    gpus: str = "all"  # "all" or a comma list of device indices
    workers: int = 1  # worker processes on a machine without GPUs
    shard: tuple[int, int] | None = None
    tasks: tuple[str, ...] = ()  # only these tasks (empty: all)
    retry_failed: bool = False
    retry_skipped: bool = False
    rerun_all: bool = False
    timeout_s: float | None = None  # overrides every cell's timeout
    target_spread: float | None = None  # overrides every cell's spread target (core/timing.py)
    machine_file: Path | None = None  # use this machine record instead of detecting
    flush_interval_s: float = 1.0
    flush_rows: int = 500
    compact: bool = True
    progress: str = "auto"


def detect(machine_file: Path | None = None) -> MachineRecord:
    """This machine's record (detected in a child process), or one saved in ``machine_file``."""
    if machine_file is None:
        return detect_machine_isolated()  # in a child: this process never creates a CUDA context
    try:
        record = json.loads(Path(machine_file).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read machine record {machine_file}: {exc}") from None
    return MachineRecord.from_dict(record)


# ---------------------------------------------------------------------------------------
# Planning


@dataclass
class PlannedCell:
    """A cell with its state against the store and what this run will do with it."""

    cell: Cell
    previous: str | None  # latest stored status: ok | failed | skipped | None
    action: str  # run | record-skip | keep


@dataclass
class Plan:
    """The cells of a matrix on one machine, sorted into what runs and what is kept."""

    source: str
    machine: MachineRecord
    cells: list[PlannedCell]
    durations: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # store problems met while planning

    def to_run(self) -> list[Cell]:
        """Cells that go to workers."""
        return [p.cell for p in self.cells if p.action == "run"]

    def to_skip(self) -> list[Cell]:
        """Cells recorded skipped by the per-GPU rules, without a worker."""
        return [p.cell for p in self.cells if p.action == "record-skip"]

    def counts(self) -> dict[str, Counter]:
        """Per task: how many cells in each state (run, skip, done, failed, skipped)."""
        out: dict[str, Counter] = {}
        for p in self.cells:
            state = {"run": "run", "record-skip": "skip"}.get(p.action) or {
                "ok": "done",
                "failed": "failed",
                "skipped": "skipped",
            }[p.previous]
            out.setdefault(p.cell.task, Counter())[state] += 1
        return out

    def estimate(self, n_workers: int) -> tuple[float, int, int, float]:
        """Estimated seconds for the cells to run (over ``n_workers``), how many cells have
        neither history nor a cost model, how many were estimated by their task's model, and
        the seconds of the estimate that come from the model.

        A cell's earlier median (task[/backend]) wins; otherwise its task's cost model,
        whose setup time is counted once per setup key, and its one-time costs once per
        key in the run."""
        total, unknown, modelled, model_s = 0.0, 0, 0, 0.0
        setups: dict[str, float] = {}
        once: dict[str, float] = {}
        for cell in self.to_run():
            est = estimate_seconds(self.durations, cell)
            if est is not None:
                total += est
                continue
            task = get_task(cell.task)
            model = task.cost(cell.params)
            if model is None:
                unknown += 1
                continue
            setup, seconds, *paid_once = model
            setups[f"{cell.task}:{task.setup_key(cell.params)}"] = setup
            for key, secs in (paid_once[0] if paid_once else {}).items():
                once[f"{cell.task}:{key}"] = max(secs, once.get(f"{cell.task}:{key}", 0.0))
            model_s += seconds
            modelled += 1
        model_s += sum(setups.values()) + sum(once.values())
        n = max(n_workers, 1)
        return (total + model_s) / n, unknown, modelled, model_s / n


def _history(store: Store, tag: str) -> tuple[dict[str, str], dict[str, float]]:
    frame = store.read(tag)
    if frame.empty:
        return {}, {}
    latest = latest_per_cell(frame)
    status = dict(zip(latest["cell_id"].astype(str), latest["status"].astype(str), strict=True))
    ran = frame[frame["status"] != "skipped"].dropna(subset=["duration_s"])
    ran = ran.drop_duplicates(subset=["run_id", "cell_id"])
    durations: dict[str, float] = {}
    for task, grp in ran.groupby(ran["task"].astype(str)):
        durations[task] = float(grp["duration_s"].astype(float).median())
        for backend, sub in grp.dropna(subset=["backend"]).groupby(grp["backend"].astype(str)):
            durations[f"{task}/{backend}"] = float(sub["duration_s"].astype(float).median())
    return status, durations


def worker_slots(plan: Plan, options: RunOptions) -> list[str | None]:
    """The CUDA device of each worker this run starts (None entries: CPU workers)."""
    m = plan.machine
    return gpu_slots(options.gpus, m.has_gpu, options.workers, m.gpu_count)


def make_plan(
    preset: str, options: RunOptions, machine: MachineRecord | None = None, matrix=None
) -> Plan:
    """Expand ``preset`` (a name or a path; or, with ``matrix``, only its label), apply
    shard, task filter, GPU rules and history."""
    matrix, source = (matrix, preset) if matrix is not None else load_matrix(preset)
    cells = expand(matrix)
    if options.tasks:
        unknown = sorted(set(options.tasks) - set(task_names()))
        if unknown:
            raise UserError(f"unknown --task {unknown[0]!r}; tasks: {', '.join(task_names())}")
        cells = [c for c in cells if c.task in options.tasks]
    if options.shard is not None:
        cells = shard(cells, *options.shard)
    machine = machine or detect(options.machine_file)
    cells = apply_rules(cells, machine, load_rules())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreWarning)
        status, durations = _history(Store(options.results), machine.gpu_tag)
    planned = []
    for cell in cells:
        prev = status.get(cell.cell_id)
        rerun = (
            prev is None
            or options.rerun_all
            or (prev == "failed" and options.retry_failed)
            or (prev == "skipped" and options.retry_skipped)
        )
        action = "keep" if not rerun else ("record-skip" if cell.skip_reason else "run")
        planned.append(PlannedCell(cell, prev, action))
    notes = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
    return Plan(source, machine, planned, durations, notes)


# ---------------------------------------------------------------------------------------
# Rows


def cell_rows(
    cell: Cell, result: Mapping[str, Any], *, run_id: str, machine: MachineRecord
) -> list[dict[str, Any]]:
    """Store rows for one cell result (the task's rows, or one row for a skip/failure)."""
    task = get_task(cell.task)
    base: dict[str, Any] = {c: cell.params[c] for c in _PARAM_COLUMNS if c in cell.params}
    for key, value in (task.row_key(cell.params) or {}).items():
        base.setdefault(key, value)
    base.setdefault("mode", task.mode)
    common = {
        "run_id": run_id,
        "cell_id": cell.cell_id,
        "gpu_tag": machine.gpu_tag,
        "task": cell.task,
        "status": result["status"],
        "error_class": result.get("error_class"),
        "error_message": result.get("error_message"),
        "started_at": result.get("started_at") or datetime.now(UTC),
        "duration_s": result.get("duration_s"),
        "versions": machine.versions(),
    }
    task_rows = result.get("rows") or [{}]
    rows = []
    for task_row in task_rows:
        extra = task_row.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra)
        row = {**base, **{k: v for k, v in task_row.items() if v is not None}, **common}
        row["extra"] = {**extra, "params": dict(cell.params)}
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------
# Running


@dataclass
class RunSummary:
    """What a run did: counts by status, the failures, where things were written."""

    run_id: str
    gpu_tag: str
    counts: Counter
    failures: list[tuple[str, str, str]]  # (label, error_class, message)
    kept_failed: int  # failed cells from earlier runs not retried
    duration_s: float
    event_log: Path | None
    interrupted: int = 0  # the signal that stopped the run (SIGINT, SIGTERM), 0 if none

    @property
    def exit_code(self) -> int:
        """0 when every cell is ok or skipped, 1 when any failed (now or kept from before)."""
        if self.interrupted:
            return 128 + self.interrupted
        return 1 if (self.counts["failed"] or self.kept_failed) else 0


class _Recorder:
    """Buffers rows and events; flushes rows to atomic part files by time or count."""

    def __init__(self, store: Store, tag: str, run_id: str, options: RunOptions):
        self.store, self.tag, self.run_id, self.options = store, tag, run_id, options
        self.rows: list[dict[str, Any]] = []
        self.seq = 0
        self.last_flush = time.monotonic()
        log_dir = store.runs_dir(tag)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{run_id}.jsonl"
        self.log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - lives for the run

    def event(self, name: str, **fields: Any) -> None:
        rec = {"t": datetime.now(UTC).isoformat(), "event": name, **fields}
        self.log.write(json.dumps(rec, default=str) + "\n")
        self.log.flush()

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        self.maybe_flush()

    def maybe_flush(self) -> None:
        due = time.monotonic() - self.last_flush >= self.options.flush_interval_s
        if self.rows and (due or len(self.rows) >= self.options.flush_rows):
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.seq += 1
            name = f"{self.run_id}-{self.seq:05d}"
            self.store.write_rows(self.tag, self.rows, name=name)
            self.event("flush", part=name, rows=len(self.rows))
            self.rows = []
        self.last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        if self.options.compact and self.seq > 1:
            self.store.compact_run(self.tag, self.run_id)
        self.log.close()


def _lock(store: Store, tag: str, shard_: tuple[int, int] | None) -> Any:
    # Two runners on the same cells would both run them; shards of one tag may share a folder.
    import fcntl

    name = f".lock-{shard_[0]}of{shard_[1]}" if shard_ else ".lock"
    path = store.runs_dir(tag) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a")  # noqa: SIM115 - held for the whole run, released on exit or kill
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise UserError(
            f"another run-matrix is already running on {store.tag_dir(tag)}"
            + (f" for shard {shard_[0]}/{shard_[1]}" if shard_ else "")
            + "; wait for it to finish or use another --results folder"
        ) from None
    return fh


def run_plan(plan: Plan, options: RunOptions, progress: PlainProgress | None = None) -> RunSummary:
    """Run a plan: record rule skips, dispatch the rest to workers, flush, compact."""
    machine = plan.machine
    store = Store(options.results)
    lock = _lock(store, machine.gpu_tag, options.shard)
    try:
        return _run_locked(plan, options, progress, store)
    finally:
        lock.close()


def _run_locked(plan: Plan, options: RunOptions, progress, store: Store) -> RunSummary:
    machine = plan.machine
    to_run, to_skip = plan.to_run(), plan.to_skip()
    # Before anything is written: a bad --gpus is a one-line error, not a half-begun run.
    slots = worker_slots(plan, options) if to_run else []
    # A part nobody can read would be skipped by every later read: set it aside (with a
    # warning) before this run writes, so its cells, planned to run again, are stored anew.
    store.quarantine_unreadable(machine.gpu_tag)
    store.write_machine(machine.gpu_tag, machine.to_dict())
    run_id = new_run_id()
    rec = _Recorder(store, machine.gpu_tag, run_id, options)
    progress = progress or make_progress(options.progress)
    kept_failed = sum(1 for p in plan.cells if p.action == "keep" and p.previous == "failed")
    counts: Counter = Counter()
    failures: list[tuple[str, str, str]] = []
    t0 = time.monotonic()
    in_cells = [0.0]  # seconds the cells took, summed (slidesparse.results.runlog)
    # plan's prediction, kept beside the run's wall time so the two can be compared after.
    predicted_s, unestimated, _, _ = plan.estimate(len(slots))
    rec.event(
        "run_start",
        predicted_s=predicted_s,
        unestimated=unestimated,
        run_id=run_id,
        source=plan.source,
        gpu_tag=machine.gpu_tag,
        shard=options.shard,
        cells=len(plan.cells),
        to_run=len(to_run),
        to_skip=len(to_skip),
        argv=sys.argv,
    )
    progress.start(len(to_run) + len(to_skip))

    def finish(cell: Cell, result: dict[str, Any]) -> None:
        try:
            rows = cell_rows(cell, result, run_id=run_id, machine=machine)
            from slidesparse.results.store import normalize_row

            for row in rows:
                normalize_row(row)
        except (ValueError, TypeError) as exc:
            result = {
                **result,
                "status": "failed",
                "error_class": "error",
                "rows": [],
                "error_message": f"task returned a bad row: {exc}",
            }
            rows = cell_rows(cell, result, run_id=run_id, machine=machine)
        status = result["status"]
        counts[status] += 1
        if status != "skipped":
            in_cells[0] += float(result.get("duration_s") or 0.0)
        detail = ""
        if status != "ok":
            message = (result.get("error_message") or "").strip()
            detail = f"{result.get('error_class')}: {message.splitlines()[0] if message else ''}"
            detail = detail[:300]
        if status == "failed":
            failures.append((cell.describe(), result.get("error_class"), detail))
        rec.event(
            "cell_end",
            cell_id=cell.cell_id,
            task=cell.task,
            status=status,
            error_class=result.get("error_class"),
            duration_s=result.get("duration_s"),
        )
        rec.add(rows)
        progress.advance(cell.describe(), status, result.get("duration_s") or 0.0, detail)

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for cell in to_skip:
            finish(
                cell,
                {
                    "status": "skipped",
                    "error_class": "unsupported",
                    "error_message": cell.skip_reason,
                    "duration_s": 0.0,
                },
            )
        if to_run:
            store_ = Store(options.results)
            config = PoolConfig(
                slots=slots,
                device="cuda" if machine.has_gpu else "cpu",
                gpu_tag=machine.gpu_tag,
                cache_dir=store_.cache_dir(machine.gpu_tag),
                log_dir=store_.runs_dir(machine.gpu_tag),
                run_id=run_id,
                timeout_s=options.timeout_s,
                target_spread=options.target_spread,
                tick_s=options.flush_interval_s,
            )
            dispatch(
                to_run,
                config,
                finish=finish,
                event=rec.event,
                note=progress.note,
                on_tick=rec.maybe_flush,
                stopped=lambda: stop["signal"] is not None,
            )
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        interrupted = int(stop["signal"] or 0)
        rec.flush()
        rec.event(
            "run_end",
            counts=dict(counts),
            interrupted=interrupted,
            duration_s=time.monotonic() - t0,
            in_cells_s=in_cells[0],
        )
        rec.close()
        progress.close()
    return RunSummary(
        run_id,
        machine.gpu_tag,
        counts,
        failures,
        kept_failed,
        time.monotonic() - t0,
        rec.log_path,
        interrupted,
    )
