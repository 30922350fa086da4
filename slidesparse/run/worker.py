"""The worker process: runs cells one at a time for the runner, kept warm between cells.

Started as ``python -m slidesparse.run.worker`` with ``CUDA_VISIBLE_DEVICES`` pinned to one GPU
and its configuration in the ``SLIDESPARSE_WORKER`` environment variable (JSON). Protocol,
one JSON object per line: the runner writes ``{"op": "run", "cell_id", "task", "params",
"target_spread"}``
(or ``{"op": "exit"}``) to stdin; the worker answers ``{"op": "ready"}`` once, then one
``{"op": "result", ...}`` per cell on a private copy of its original stdout. File
descriptor 1 is pointed at stderr (the runner's per-worker log), so whatever a task prints
can never corrupt the protocol.

A cell whose failure leaves the CUDA context unusable (a sticky error) is answered with
``"restart": true`` and the worker exits; the runner starts a fresh one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slidesparse.core.errors import Unsupported
from slidesparse.core.faults import classify_exception, is_sticky, tail
from slidesparse.core.process import die_with_parent

CONFIG_ENV = "SLIDESPARSE_WORKER"


def _jsonable(value: Any) -> Any:
    # numpy / torch scalars expose item(); everything else that json refuses becomes text.
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def run_cell(msg: dict[str, Any], ctx) -> dict[str, Any]:
    """Run one cell message and return the result message (never raises)."""
    from slidesparse.tasks import get_task, load_task_module

    started = datetime.now(UTC)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"op": "result", "cell_id": msg["cell_id"], "rows": []}
    if msg.get("target_spread") is not None:
        # A copy for this cell only; the memo is the same dict, so warm setup is kept.
        ctx = dataclasses.replace(ctx, target_spread=msg["target_spread"])
    try:
        if msg.get("module"):
            load_task_module(msg["module"], msg.get("source"))
        spec = get_task(msg["task"])
        rows = spec.fn(msg["params"], ctx)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise TypeError(f"task {msg['task']!r} returned {type(rows).__name__}, not list[dict]")
        result.update(status="ok", rows=rows)
    except Unsupported as exc:
        result.update(status="skipped", error_class="unsupported", error_message=exc.reason)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
        result.update(
            status="failed",
            error_class=classify_exception(exc),
            error_message=tail(text),
            restart=is_sticky(text),
        )
    result["duration_s"] = time.perf_counter() - t0
    result["started_at"] = started.isoformat()
    return result


def main() -> int:
    """Serve cells from stdin until told to exit or stdin closes."""
    from slidesparse.tasks import TaskContext

    config = json.loads(os.environ.get(CONFIG_ENV, "{}"))
    die_with_parent(int(config.get("parent_pid", os.getppid())))
    # The runner owns shutdown (it flushes rows first); a stray Ctrl-C must not kill a cell.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import faulthandler

    faulthandler.enable(file=sys.stderr)
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    if config.get("device", "cpu") == "cpu":
        # One intra-op thread: with several threads, a matmul waits for its slowest thread, and
        # on a shared or small CPU that turned timings into multiples of the 4 ms scheduler tick.
        # Set before torch is imported, which reads it once; a user's own setting wins.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        # Without a GPU the Triton kernels (kernel-quant cells) run in Triton's interpreter;
        # triton reads this once at import, so it must be set before any task imports it.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    ctx = TaskContext(
        device=config.get("device", "cpu"),
        gpu_tag=config.get("gpu_tag", "unknown"),
        cache_dir=Path(config.get("cache_dir", ".")),
    )

    def send(obj: dict[str, Any]) -> None:
        try:
            text = json.dumps(obj, default=_jsonable)
        except (TypeError, ValueError) as exc:  # e.g. a circular structure in a row
            text = json.dumps(
                {
                    **obj,
                    "rows": [],
                    "status": "failed",
                    "error_class": "error",
                    "error_message": f"task rows are not serializable: {exc}",
                }
            )
        proto.write(text + "\n")
        proto.flush()

    send({"op": "ready", "pid": os.getpid()})
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("op") == "exit":
            break
        print(f"--- cell {msg['cell_id']} {msg['task']} {msg['params']}", file=sys.stderr)
        sys.stderr.flush()
        result = run_cell(msg, ctx)
        sys.stdout.flush()
        sys.stderr.flush()
        send(result)
        if result.get("restart"):
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
