"""The runner's worker pool: warm worker processes, one per GPU, replaced when they die.

The parent side of :mod:`slidesparse.run.worker`'s protocol. Cells are queued by setup group
(cells that share pruned/compressed weights or searched algorithms) so a warm worker reuses
its setup; an idle worker takes the next group, and when none is left it takes the back half
of the longest queue of another worker. A worker that dies or overruns its cell's timeout is
killed, its cell recorded failed with an error class, and a fresh worker takes over.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slidesparse.core.errors import UserError
from slidesparse.core.faults import classify_exit, death_message, describe_exit, tail
from slidesparse.run.matrix import Cell
from slidesparse.run.worker import CONFIG_ENV
from slidesparse.tasks import get_task

_STARTUP_TIMEOUT_S = 300.0
_MAX_START_FAILURES = 3


class _Worker:
    """Parent-side handle of one worker process."""

    def __init__(self, slot: int, gpu: str | None, config: dict[str, Any], log_path: Path):
        self.slot, self.gpu, self.config, self.log_path = slot, gpu, config, log_path
        self.proc: subprocess.Popen | None = None
        self.buf = b""
        self.state = "down"  # down | starting | idle | busy
        self.cell: Cell | None = None
        self.deadline = 0.0
        self.sent_at = 0.0
        self.log_offset = 0
        self.group: deque[Cell] = deque()

    def start(self) -> None:
        env = dict(os.environ)
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
        env[CONFIG_ENV] = json.dumps({**self.config, "parent_pid": os.getpid()})
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "slidesparse.run.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                # Own process group: a kill reaches whatever the cell started (a vLLM
                # server, a compiler), and Ctrl-C in the terminal reaches only the runner.
                start_new_session=True,
            )
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buf = b""
        self.state = "starting"
        self.deadline = time.monotonic() + _STARTUP_TIMEOUT_S

    def send(self, cell: Cell, timeout_s: float, target_spread: float | None = None) -> None:
        spec = get_task(cell.task)
        msg = {
            "op": "run",
            "cell_id": cell.cell_id,
            "task": cell.task,
            "params": cell.params,
            "target_spread": target_spread,
            "module": spec.module,
            "source": spec.source,
        }
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.cell, self.state = cell, "busy"
        self.sent_at = time.monotonic()
        self.deadline = self.sent_at + timeout_s
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the worker is dying; its EOF arrives through the selector

    def read_messages(self) -> tuple[list[dict[str, Any]], bool]:
        """Messages available now, and whether stdout reached EOF (the worker died)."""
        eof = False
        while True:
            try:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        msgs = []
        for line in lines:
            try:
                msgs.append(json.loads(line))
            except ValueError:  # not ours (a library writing to the protocol fd): ignore
                continue
        return msgs, eof

    def stderr_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self.log_offset)
                return fh.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def kill(self) -> int | None:
        if self.proc is None:
            return None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        rc = self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        self.state = "down"
        return rc

    def stop(self) -> None:
        """Ask an idle worker to exit, then make sure it did."""
        if self.proc is not None and self.proc.poll() is None and self.state == "idle":
            try:
                self.proc.stdin.write(b'{"op": "exit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
        self.kill()


def gpu_slots(
    spec: str, has_gpu: bool, workers: int = 1, gpu_count: int | None = None
) -> list[str | None]:
    """One entry per worker: the CUDA device it is pinned to, or None on a CPU machine.

    Indices in ``spec`` count the devices this process sees, so under an outer
    ``CUDA_VISIBLE_DEVICES=2,3`` (a Slurm or Kubernetes allocation) ``--gpus 1`` is device 3.
    """
    slots = [s.strip() for s in spec.split(",") if s.strip()] if spec != "all" else []
    # Checked before anything else, so a typo fails the same way with or without a GPU.
    if spec != "all" and (not slots or not all(s.isdigit() for s in slots)):
        raise UserError(f"bad --gpus {spec!r}; use 'all' or device indices such as 0,1")
    if not has_gpu:
        return [None] * max(1, workers)
    visible_env = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = [s.strip() for s in visible_env.split(",") if s.strip()] if visible_env else None
    if spec != "all":
        if visible is None:
            if gpu_count and max(int(s) for s in slots) >= gpu_count:
                raise UserError(
                    f"--gpus {spec} asks for a device this machine lacks: it has {gpu_count} "
                    f"GPU(s), indices 0..{gpu_count - 1}"
                )
            return slots
        if max(int(s) for s in slots) >= len(visible):
            raise UserError(
                f"--gpus {spec} asks for more devices than CUDA_VISIBLE_DEVICES={visible_env} "
                f"shows ({len(visible)})"
            )
        return [visible[int(s)] for s in slots]
    if visible:
        return visible
    if gpu_count:
        return [str(i) for i in range(gpu_count)]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        count = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    except (OSError, subprocess.TimeoutExpired):
        count = 0
    return [str(i) for i in range(max(count, 1))]


def _timeout(cell: Cell, override: float | None) -> float:
    if override is not None:
        return override
    if cell.timeout_s is not None:
        return cell.timeout_s
    return get_task(cell.task).default_timeout_s


def _target_spread(cell: Cell, override: float | None) -> float | None:
    return override if override is not None else cell.target_spread


def _setup_groups(cells: list[Cell]) -> OrderedDict[str, deque[Cell]]:
    """Cells grouped by their task's setup key, groups in first-seen order.

    A non-empty setup key names the setup itself, so cells of different tasks that need the
    same one (an engine's prefill and decode cells) share a group and a warm worker; an
    empty key groups a task's cells together. Groups queue task by task in the matrix's
    order, within a task by rank (lowest first: the dense GEMMs that sparse cells pair
    with), then in first-seen order."""
    groups: OrderedDict[str, deque[Cell]] = OrderedDict()
    ranks: dict[str, tuple[int, int]] = {}
    tasks: dict[str, int] = {}  # task -> position of its first cell
    for cell in cells:
        try:
            spec = get_task(cell.task)
            setup = str(spec.setup_key(cell.params))
            key = f"setup:{setup}" if setup else f"{cell.task}:"
            rank = int(spec.rank(cell.params))
        except Exception:  # a setup key that cannot be computed: group by the params instead
            key, rank = cell.group_key, 0
        groups.setdefault(key, deque()).append(cell)
        at = (tasks.setdefault(cell.task, len(tasks)), rank)
        ranks[key] = min(at, ranks.get(key, at))
    # Stable: tasks in the matrix's order, by rank within a task, then first seen.
    return OrderedDict(sorted(groups.items(), key=lambda kv: ranks[kv[0]]))


@dataclass
class PoolConfig:
    """Where and how workers run."""

    slots: list[str | None]  # CUDA device per worker, None for CPU workers
    device: str  # "cuda" | "cpu"
    gpu_tag: str
    cache_dir: Path
    log_dir: Path  # per-worker stderr logs
    run_id: str
    timeout_s: float | None = None  # overrides every cell's timeout
    target_spread: float | None = None  # overrides every cell's spread target
    tick_s: float = 1.0  # longest wait between calls of ``on_tick``


def dispatch(
    cells: list[Cell],
    config: PoolConfig,
    *,
    finish: Callable[[Cell, dict[str, Any]], None],
    event: Callable[..., None],
    note: Callable[[str], None],
    on_tick: Callable[[], None],
    stopped: Callable[[], bool],
) -> None:
    """Run ``cells`` on warm workers; call ``finish(cell, result)`` once for each.

    Returns when every cell is finished or ``stopped()`` turns true (then the cells in
    flight are abandoned: they run again on resume).
    """
    groups = _setup_groups(cells)
    wconfig = {
        "device": config.device,
        "gpu_tag": config.gpu_tag,
        "cache_dir": str(config.cache_dir),
    }
    workers = [
        _Worker(i, gpu, wconfig, config.log_dir / f"{config.run_id}.worker{i}.log")
        for i, gpu in enumerate(config.slots[: max(1, len(cells))])
    ]
    sel = selectors.DefaultSelector()
    start_failures = 0
    remaining = len(cells)

    def start(w: _Worker) -> None:
        w.start()
        sel.register(w.proc.stdout, selectors.EVENT_READ, w)
        event("worker_start", slot=w.slot, gpu=w.gpu, pid=w.proc.pid)

    def retire(w: _Worker, reason: str) -> int | None:
        sel.unregister(w.proc.stdout)
        rc = w.kill()
        event("worker_exit", slot=w.slot, returncode=rc, reason=reason)
        return rc

    def next_cell(w: _Worker) -> Cell | None:
        if not w.group:
            if groups:
                w.group = groups.popitem(last=False)[1]
            else:  # steal the back half of the longest queue of another worker
                donor = max(workers, key=lambda o: len(o.group))
                if len(donor.group) > 1:
                    for _ in range(len(donor.group) // 2):
                        w.group.appendleft(donor.group.pop())
        return w.group.popleft() if w.group else None

    def requeue(w: _Worker) -> None:
        if w.group:
            groups[f"requeue:{id(w.group)}"] = w.group
            groups.move_to_end(f"requeue:{id(w.group)}", last=False)
            w.group = deque()

    def feed(w: _Worker) -> None:
        cell = next_cell(w) if not stopped() else None
        if cell is not None:
            event("cell_start", cell_id=cell.cell_id, slot=w.slot)
            w.send(cell, _timeout(cell, config.timeout_s),
                   _target_spread(cell, config.target_spread))  # fmt: skip

    for w in workers:
        start(w)
    try:
        while remaining > 0 and not stopped():
            for w in workers:
                if w.state == "idle":
                    feed(w)
                elif w.state == "down" and (groups or any(o.group for o in workers)):
                    start(w)
            now = time.monotonic()
            active = [w for w in workers if w.state in ("busy", "starting")]
            if not active:
                break
            wait = min(w.deadline for w in active) - now
            wait = max(0.0, min(wait, config.tick_s))
            for key, _ in sel.select(wait):
                w = key.data
                msgs, eof = w.read_messages()
                for msg in msgs:
                    if msg.get("op") == "ready":
                        w.state, start_failures = "idle", 0
                        event("worker_ready", slot=w.slot)
                    elif msg.get("op") == "result" and w.cell is not None:
                        cell, w.cell, w.state = w.cell, None, "idle"
                        remaining -= 1
                        if msg.get("restart"):
                            retire(w, "sticky CUDA error")
                            requeue(w)
                            note(f"worker {w.slot}: restarting after a sticky error")
                        else:
                            # The next cell goes out before this one is recorded: the
                            # worker times while the runner writes rows and flushes.
                            feed(w)
                        finish(cell, msg)
                if eof and w.state != "down":
                    rc = w.proc.wait()
                    err = w.stderr_tail()
                    if w.state == "busy":
                        cell, w.cell = w.cell, None
                        remaining -= 1
                        finish(
                            cell,
                            {
                                "status": "failed",
                                "error_class": classify_exit(rc, err),
                                "error_message": death_message(rc, err),
                                "duration_s": time.monotonic() - w.sent_at,
                            },
                        )
                    elif w.state == "starting":
                        start_failures += 1
                    retire(w, describe_exit(rc))
                    requeue(w)
                    if start_failures >= _MAX_START_FAILURES:
                        last = err.strip().splitlines()[-1] if err.strip() else "no output"
                        raise UserError(
                            f"worker processes fail to start ({last}); see {w.log_path}"
                        )
            now = time.monotonic()
            for w in workers:
                if w.state in ("busy", "starting") and now > w.deadline:
                    cell, was = w.cell, w.state
                    retire(w, "timeout")
                    requeue(w)
                    if was == "busy":
                        remaining -= 1
                        limit = now - w.sent_at
                        finish(
                            cell,
                            {
                                "status": "failed",
                                "error_class": "timeout",
                                "error_message": f"no result after {limit:.0f}s; "
                                f"worker killed\n{tail(w.stderr_tail(), 1500)}",
                                "duration_s": limit,
                            },
                        )
                    else:
                        start_failures += 1
                        if start_failures >= _MAX_START_FAILURES:
                            raise UserError(
                                f"worker processes did not start within {_STARTUP_TIMEOUT_S:.0f}s;"
                                f" see {w.log_path}"
                            )
            on_tick()
    finally:
        for w in workers:
            if w.state != "down":
                w.stop()
        sel.close()
