"""Task ``noop``: does nothing, or fails on purpose, so the runner can be tested and timed.

``params["action"]`` picks the behaviour: ``ok`` and ``sleep`` succeed (``sleep_s``
seconds); ``raise`` raises; ``unsupported`` raises Unsupported; ``abort``, ``segfault`` and
``exit`` kill the worker process; ``hang`` never returns (``spawn_hang`` after starting a
child process); ``oom``,
``cuda_illegal_instruction`` and ``cuda_illegal_address`` raise with the messages PyTorch
prints for those faults; ``stderr_illegal_address`` prints the CUDA runtime's message and
aborts, as a fault inside a kernel library does.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt

from slidesparse.core.errors import Unsupported
from slidesparse.tasks import TaskContext, register_task
from slidesparse.tasks.axes import Axes, axis, product

_CUDA_MESSAGES = {
    "cuda_illegal_instruction": "CUDA error: an illegal instruction was encountered",
    "cuda_illegal_address": "CUDA error: an illegal memory access was encountered",
    "oom": "CUDA out of memory. Tried to allocate 20.00 GiB",
}


ACTIONS = (
    "ok",
    "sleep",
    "raise",
    "abort",
    "segfault",
    "hang",
    "spawn_hang",
    "exit",
    "unsupported",
    *_CUDA_MESSAGES,
    "stderr_illegal_address",
)


class NoopAxes(Axes):
    """noop: the runner's test and overhead task; ``action`` injects faults."""

    action: axis(Literal[ACTIONS]) = ["ok"]  # type: ignore[valid-type]
    index: axis(int) | None = None
    count: PositiveInt | None = None  # shorthand for index: [0, 1, ..., count-1]
    sleep_s: axis(Annotated[float, Field(ge=0)]) = [0.0]
    gpu: bool = False

    def points(self) -> Iterator[dict[str, Any]]:
        index = self.index or list(range(self.count or 1))
        for p in product(action=self.action, index=index, sleep_s=self.sleep_s):
            yield {**p, "gpu": self.gpu}


@register_task(
    "noop",
    axes=NoopAxes,
    default_timeout_s=60,
    needs_gpu=lambda p: bool(p.get("gpu")),
    mode="noop",
)
def run(params: Mapping[str, Any], ctx: TaskContext) -> list[dict]:
    """Behave as ``params["action"]`` says; return one row with the time spent."""
    action = params.get("action", "ok")
    t0 = time.perf_counter()
    if action == "sleep":
        time.sleep(float(params.get("sleep_s", 0.0)))
    elif action == "raise":
        raise ValueError(f"injected failure in cell {params.get('index')}")
    elif action == "unsupported":
        raise Unsupported("injected: this cell cannot run here")
    elif action == "abort":
        os.abort()
    elif action == "segfault":
        ctypes.string_at(0)
    elif action == "exit":
        os._exit(3)
    elif action in ("hang", "spawn_hang"):
        if action == "spawn_hang":  # a child of its own, as a vLLM or compiler call has
            child = subprocess.Popen(["sleep", "600"])
            print(f"spawned pid {child.pid}", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    elif action in _CUDA_MESSAGES:
        raise RuntimeError(_CUDA_MESSAGES[action])
    elif action == "stderr_illegal_address":
        print("terminate called after throwing an instance of 'c10::Error'", file=sys.stderr)
        print(_CUDA_MESSAGES["cuda_illegal_address"], file=sys.stderr, flush=True)
        os.abort()
    elif action != "ok":
        raise ValueError(f"unknown noop action {action!r}")
    elapsed_us = (time.perf_counter() - t0) * 1e6
    return [
        {
            "mode": "noop",
            "latency_us": elapsed_us,
            "n_samples": 1,
            "timer": "perf_counter",
            "extra": {
                "index": params.get("index"),
                "device": ctx.device,
                # The device the pool pinned this worker to (one worker per GPU).
                "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "target_spread": ctx.target_spread,
            },
        }
    ]
