"""Per-GPU skip rules: cells this machine cannot run become skips with a reason.

Four rules, in order: the cell's task's own reason (a CPU-only backend on a GPU machine, a
kernel too large for the Triton interpreter); a GPU cell on a machine without a CUDA device;
an operand dtype (dense or 2:4 sparse) the compute capability lacks (from
:func:`slidesparse.core.hardware.capabilities`); a predicted peak memory (the task's model,
with the numbers in ``gpu_rules.yaml`` beside this module) above the usable share of device
memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slidesparse.core.dtypes import DTYPES
from slidesparse.core.errors import UserError
from slidesparse.core.hardware import MachineRecord
from slidesparse.run.matrix import Cell, format_errors, load_yaml
from slidesparse.tasks import get_task

RULES_FILE = "gpu_rules.yaml"


class E2ERules(BaseModel):
    """Numbers of the end-to-end memory model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    embedding_bytes: float
    activation_bytes_per_token_hidden: float
    reserve_bytes: float


class GpuRules(BaseModel):
    """``gpu_rules.yaml``: numbers the skip rules use."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    usable_memory_fraction: Annotated[float, Field(gt=0, le=1)]
    bytes_per_element: dict[str, float]
    gemm_out_bytes: dict[str, float]
    gemm_reserve_bytes: float
    e2e: E2ERules


def load_rules(path: Path | None = None) -> GpuRules:
    """The per-GPU rules shipped in the package (or from ``path``)."""
    if path is None:
        res = resources.files(__package__) / RULES_FILE
        text, source = res.read_text(encoding="utf-8"), RULES_FILE
    else:
        text, source = Path(path).read_text(encoding="utf-8"), str(path)
    try:
        return GpuRules.model_validate(load_yaml(text))
    except ValidationError as exc:
        raise UserError(format_errors(source, exc)) from None


def predicted_bytes(cell: Cell, rules: GpuRules) -> float | None:
    """Predicted peak device memory of a cell, or None where its task has no model for it."""
    return get_task(cell.task).memory_bytes(cell.params, rules)


def _gib(x: float) -> str:
    return f"{x / 2**30:.1f} GiB"


def skip_reason(cell: Cell, machine: MachineRecord, rules: GpuRules) -> str | None:
    """Why ``cell`` cannot run on ``machine`` (task rule, no GPU, dtype, memory), or None."""
    task = get_task(cell.task)
    own = task.skip_reason(cell.params, machine.has_gpu)
    if own is not None:
        return own
    if not task.needs_gpu(cell.params):
        return None
    if not machine.has_gpu:
        return "no CUDA device"
    dtype, sparse = task.operand(cell.params)
    if dtype is not None and dtype in DTYPES:
        caps = machine.capabilities
        if not caps.supports(dtype, sparse=sparse):
            return caps.reason(dtype, sparse=sparse)
    need = task.memory_bytes(cell.params, rules)
    if need is not None and machine.memory_bytes:
        usable = machine.memory_bytes * rules.usable_memory_fraction
        if need > usable:
            return (
                f"predicted memory {_gib(need)} ({int(need)} bytes) exceeds usable "
                f"{_gib(usable)} of {_gib(machine.memory_bytes)}"
            )
    return None


def apply_rules(cells: Iterable[Cell], machine: MachineRecord, rules: GpuRules) -> list[Cell]:
    """Cells with ``skip_reason`` filled in for this machine."""
    return [replace(c, skip_reason=skip_reason(c, machine, rules)) for c in cells]
