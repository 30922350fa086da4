"""Benchmarked tasks: each one a module here that registers itself with all it needs to be
planned, skipped, scheduled and recorded.

A task is a function ``run(params, ctx) -> list[dict]`` registered with :func:`register_task`:

* ``params`` is one point of the task's typed axes (``axes``: a pydantic model whose
  ``points()`` yields the cells of a matrix block); ``ctx`` is the worker's :class:`TaskContext`.
* It returns one or more result rows (dicts of store columns); the runner fills in run_id,
  cell_id, gpu_tag, task, status and the cell's own timings.
* It raises :class:`slidesparse.core.errors.Unsupported` for a cell that cannot run here
  (recorded ``skipped`` with the reason), anything else for a failure.
* Expensive setup (pruned/compressed weights, searched algorithms) goes in ``ctx.memo``, which
  lives as long as the worker process; cells with the same ``setup_key`` run back to back.
* Every timed measurement a row reports samples adaptively to ``ctx.target_spread``
  (:mod:`slidesparse.core.timing`): the matrix or the run sets it per cell, never the params,
  so a cell's identity does not depend on how precisely it was measured.

The registration carries the rest of the task's metadata (whether a cell needs a GPU, its
``mode`` column, default timeout, the dtype the capability rule checks, its predicted memory
and its modelled cost for ``plan``), so the runner knows no task by name: adding a task is
one module in this package plus preset lines. Built-in tasks are discovered by walking this
package; a task registered from any other module (a plugin, a test) is found by the module
name its registration records.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slidesparse.core.errors import UserError
from slidesparse.core.timing import DEFAULT_TARGET

__all__ = ["TaskContext", "TaskSpec", "get_task", "load_task_module", "register_task", "task_names"]


@dataclass
class TaskContext:
    """What a task may use inside a worker process."""

    device: str  # "cpu" or "cuda" (the worker sees one GPU, pinned by CUDA_VISIBLE_DEVICES)
    gpu_tag: str
    cache_dir: Path  # per-GPU-tag cache: searched algorithms, tuned configs, prepared weights
    memo: dict[str, Any] = field(default_factory=dict)  # worker-lifetime reuse
    # Relative spread of the median every adaptive timing of the cell aims for.
    target_spread: float = DEFAULT_TARGET
    # A fixed sample count instead (kernel-gemm honours it): the seeds' way of timing, kept
    # so benchmarks/matrix_speed.py can compare the two on the same cells.
    fixed_samples: int | None = None


TaskFn = Callable[[Mapping[str, Any], TaskContext], list[dict]]
Params = Mapping[str, Any]


def _no_setup(_params: Params) -> str:
    return ""


def _nothing(_params: Params) -> None:
    return None


def _no_dtype(_params: Params) -> tuple[str | None, bool]:
    return None, False


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: its function, its axes and everything the runner asks about it."""

    name: str
    fn: TaskFn
    axes: type  # pydantic model of a matrix block's axes; .points() yields cell params
    default_timeout_s: float
    needs_gpu: Callable[[Params], bool]
    # Cells with the same setup key share expensive setup; the runner groups them.
    setup_key: Callable[[Params], str]
    mode: str | None = None  # the rows' ``mode`` column where the params name none
    # Key columns of a skipped or failed cell's row beyond its params, so that its row and a
    # later measured row of the same cell share their identity.
    row_key: Callable[[Params], Mapping[str, Any] | None] = _nothing
    # (operand dtype, sparse?) that the per-GPU capability rule checks; (None, _): no rule.
    operand: Callable[[Params], tuple[str | None, bool]] = _no_dtype
    # Predicted peak device bytes of a cell given the rules' numbers (None: no prediction).
    memory_bytes: Callable[[Params, Any], float | None] = lambda _p, _rules: None
    # Why a cell cannot run on a machine that has (True) or lacks (False) a GPU, beyond the
    # generic rules; None: nothing task-specific.
    skip_reason: Callable[[Params, bool], str | None] = lambda _p, _has_gpu: None
    # Modelled (setup seconds shared by a setup key's cells, seconds of the cell[, {key:
    # seconds} paid once per key in a run, such as vetting a library's configurations]) for
    # a machine with no earlier runs of the task; None: no model.
    cost: Callable[[Params], tuple | None] = lambda _p: None
    # Cells with the same shard key land in the same shard (None: the cell's group key,
    # everything but M): cells that need each other's results, such as a sparse GEMM and
    # the dense baseline it is timed against, or an engine's prefill and decode cells.
    shard_key: Callable[[Params], str | None] = _nothing
    # Where a cell's setup group queues in a worker: lower ranks first (the dense baselines
    # before the sparse cells paired with them).
    rank: Callable[[Params], int] = lambda _p: 0
    module: str = ""  # where the registration lives (workers import it from there)
    source: str | None = None  # its file, for modules outside any importable package


_REGISTRY: dict[str, TaskSpec] = {}
_DISCOVERED = False


def register_task(
    name: str,
    *,
    axes: type,
    default_timeout_s: float,
    needs_gpu: bool | Callable[[Params], bool],
    setup_key: Callable[[Params], str] | None = None,
    mode: str | None = None,
    row_key: Callable[[Params], Mapping[str, Any] | None] | None = None,
    operand: Callable[[Params], tuple[str | None, bool]] | None = None,
    memory_bytes: Callable[[Params, Any], float | None] | None = None,
    skip_reason: Callable[[Params, bool], str | None] | None = None,
    cost: Callable[[Params], tuple | None] | None = None,
    shard_key: Callable[[Params], str | None] | None = None,
    rank: Callable[[Params], int] | None = None,
) -> Callable[[TaskFn], TaskFn]:
    """Decorator: register ``fn`` as the implementation of task ``name`` with its metadata."""

    def deco(fn: TaskFn) -> TaskFn:
        module = sys.modules.get(fn.__module__)
        spec = TaskSpec(
            name=name,
            fn=fn,
            axes=axes,
            default_timeout_s=float(default_timeout_s),
            needs_gpu=needs_gpu if callable(needs_gpu) else (lambda _p, v=bool(needs_gpu): v),
            setup_key=setup_key or _no_setup,
            mode=mode,
            row_key=row_key or _nothing,
            operand=operand or _no_dtype,
            memory_bytes=memory_bytes or TaskSpec.memory_bytes,
            skip_reason=skip_reason or TaskSpec.skip_reason,
            cost=cost or TaskSpec.cost,
            shard_key=shard_key or _nothing,
            rank=rank or TaskSpec.rank,
            module=fn.__module__,
            source=getattr(module, "__file__", None),
        )
        _REGISTRY[name] = spec
        return fn

    return deco


def _discover() -> None:
    # Every module in this package is a task module; importing one registers its tasks.
    # Task modules keep torch imports inside functions, so this stays cheap.
    global _DISCOVERED
    if _DISCOVERED:
        return
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    _DISCOVERED = True


def task_names() -> list[str]:
    """Every task the runner knows (built in, plus any registered by an imported module)."""
    _discover()
    return list(_REGISTRY)


def get_task(name: str) -> TaskSpec:
    """The registered spec of task ``name``; UserError naming the known tasks otherwise."""
    if name not in _REGISTRY:
        _discover()
    if name not in _REGISTRY:
        raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def load_task_module(module: str, source: str | None = None) -> None:
    """Import the module that registers a task (in a worker), by name or else by file."""
    if module in sys.modules:
        return
    try:
        importlib.import_module(module)
        return
    except ModuleNotFoundError:
        if not source:
            raise
    spec = importlib.util.spec_from_file_location(module, source)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"cannot load task module {module} from {source}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod
    spec.loader.exec_module(mod)
