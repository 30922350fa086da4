"""Benchmarked tasks the runner schedules: ``kernel-gemm``, ``kernel-quant``, ``e2e-prefill``,
``e2e-decode``, ``tune`` (and ``noop`` for runner tests and overhead benchmarks).

Contract between the runner and a task:

* A task is a function ``run(params, ctx) -> list[dict]``. ``params`` is the cell's defining
  fields (a plain mapping of str -> scalar); ``ctx`` is the worker's :class:`TaskContext`.
* It returns one or more result rows (dicts of store columns, see :mod:`slidesparse.store`);
  the runner fills in run_id, cell_id, gpu_tag, task, status, timings of the cell itself.
* It raises :class:`slidesparse.errors.Unsupported` for a cell that cannot run here
  (recorded as ``skipped`` with the reason), anything else for a failure.
* Expensive setup (pruned/compressed weights, searched algorithms) goes in ``ctx.memo``,
  which lives as long as the worker process, so cells ordered by ``setup_key`` reuse it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slidesparse.errors import UserError


@dataclass
class TaskContext:
    """What a task may use inside a worker process."""

    device: str  # "cpu" or "cuda" (the worker sees one GPU, pinned by CUDA_VISIBLE_DEVICES)
    gpu_tag: str
    cache_dir: Path  # per-GPU-tag cache: searched algorithms, tuned configs
    memo: dict[str, Any] = field(default_factory=dict)  # worker-lifetime reuse


TaskFn = Callable[[Mapping[str, Any], TaskContext], list[dict]]


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: its function and scheduling metadata."""

    name: str
    fn: TaskFn
    default_timeout_s: float
    needs_gpu: bool
    # Cells with the same setup key share expensive setup; the runner groups them.
    setup_key: Callable[[Mapping[str, Any]], str]


_REGISTRY: dict[str, TaskSpec] = {}

# Where each task lives; imported on first use so that importing the package stays cheap.
_TASK_MODULES = {
    "noop": "slidesparse.tasks.noop",
    "kernel-gemm": "slidesparse.tasks.kernel_gemm",
    "kernel-quant": "slidesparse.tasks.kernel_quant",
    "e2e-prefill": "slidesparse.tasks.e2e",
    "e2e-decode": "slidesparse.tasks.e2e",
    "tune": "slidesparse.tasks.tune",
}


def register_task(
    name: str,
    *,
    default_timeout_s: float,
    needs_gpu: bool,
    setup_key: Callable[[Mapping[str, Any]], str] | None = None,
) -> Callable[[TaskFn], TaskFn]:
    """Decorator: register ``fn`` as the implementation of task ``name``."""

    def deco(fn: TaskFn) -> TaskFn:
        _REGISTRY[name] = TaskSpec(
            name=name,
            fn=fn,
            default_timeout_s=default_timeout_s,
            needs_gpu=needs_gpu,
            setup_key=setup_key or (lambda _params: ""),
        )
        return fn

    return deco


def task_names() -> list[str]:
    """Every task the runner knows."""
    return list(_TASK_MODULES)


def get_task(name: str) -> TaskSpec:
    """The registered spec of task ``name`` (importing its module on first use)."""
    if name not in _TASK_MODULES:
        raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(_TASK_MODULES)}")
    if name not in _REGISTRY:
        importlib.import_module(_TASK_MODULES[name])
    return _REGISTRY[name]
