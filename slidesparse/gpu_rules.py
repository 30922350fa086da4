"""Per-GPU skip rules: cells this machine cannot run become skips with a reason.

Three rules, in order: a GPU cell on a machine without a CUDA device; a dtype (dense or 2:4
sparse) the compute capability lacks (from :func:`slidesparse.hardware.capabilities`); a
predicted peak memory (operands, slid copies, compressed weights, activations, reserve; the
numbers live in ``matrix/gpu_rules.yaml``) above the usable share of device memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slidesparse.errors import UserError
from slidesparse.hardware import DTYPES as GEMM_DTYPES
from slidesparse.matrix import (
    RULES_FILE,
    Cell,
    _format_errors,
    _matrix_dir,
    load_yaml,
)


class _E2ERules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    embedding_bytes: float
    activation_bytes_per_token_hidden: float
    reserve_bytes: float


class GpuRules(BaseModel):
    """``matrix/gpu_rules.yaml``: numbers the skip rules use."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    usable_memory_fraction: Annotated[float, Field(gt=0, le=1)]
    bytes_per_element: dict[str, float]
    gemm_out_bytes: dict[str, float]
    gemm_reserve_bytes: float
    e2e: _E2ERules


def load_rules(path: Path | None = None) -> GpuRules:
    """The per-GPU rules shipped in the package (or from ``path``)."""
    if path is None:
        res = _matrix_dir() / RULES_FILE
        text, source = res.read_text(encoding="utf-8"), f"matrix/{RULES_FILE}"
    else:
        text, source = Path(path).read_text(encoding="utf-8"), str(path)
    try:
        return GpuRules.model_validate(load_yaml(text))
    except ValidationError as exc:
        raise UserError(_format_errors(source, exc)) from None


def _gemm_bytes(p: Mapping[str, Any], rules: GpuRules) -> float:
    from slidesparse.sparsity import k_slide, parse_pattern

    b = rules.bytes_per_element[p["dtype"]]
    m, n, k = p["M"], p["N"], p["K"]
    total = (m * k + n * k) * b + m * n * rules.gemm_out_bytes[p["dtype"]]
    pattern = parse_pattern(p["sparsity"])
    if not pattern.is_dense:
        ks = k_slide(k, pattern)
        # slid activation + slid weight + compressed copy (values + metadata)
        total += (m * ks + n * ks) * b + n * ks / 2 * b * 1.125
    return total + rules.gemm_reserve_bytes


def _e2e_bytes(p: Mapping[str, Any], rules: GpuRules) -> float:
    from slidesparse.models import get_model
    from slidesparse.sparsity import expansion, parse_pattern

    spec = get_model(p["model"])
    pattern = parse_pattern(p["sparsity"])
    # A sparse backend serves the slid checkpoint, whose linear weights grow by the
    # expansion 2(L-2)/L; embeddings and lm_head stay dense.
    scale = 1.0 if pattern.is_dense else expansion(pattern)
    weights = spec.linear_params * rules.bytes_per_element[p["dtype"]] * scale
    copies = 1 if spec.tie_word_embeddings else 2
    embed = copies * spec.vocab_size * spec.hidden * rules.e2e.embedding_bytes
    acts = p["M"] * spec.hidden * rules.e2e.activation_bytes_per_token_hidden
    return weights + embed + acts + rules.e2e.reserve_bytes


def predicted_bytes(cell: Cell, rules: GpuRules) -> float | None:
    """Predicted peak device memory of a cell, or None where there is no model for it."""
    if cell.task == "kernel-gemm":
        return _gemm_bytes(cell.params, rules)
    if cell.task in ("e2e-prefill", "e2e-decode"):
        return _e2e_bytes(cell.params, rules)
    return None


def _cell_dtype(cell: Cell) -> tuple[str | None, bool]:
    p = cell.params
    if cell.task == "kernel-gemm" or cell.task.startswith("e2e-"):
        return p["dtype"], p.get("sparsity") not in (None, "dense")
    if cell.task in ("kernel-quant", "tune"):
        out = p.get("out_dtype")
        return (out if out in ("int8", "fp8") else None), False
    return None, False


@dataclass
class MachineView:
    """What the skip rules need to know about a machine (from hardware.MachineRecord)."""

    gpu_tag: str
    cc: tuple[int, int] | None
    memory_bytes: int | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_gpu(self) -> bool:
        """Whether a CUDA device was detected."""
        return self.cc is not None


def _gib(x: float) -> str:
    return f"{x / 2**30:.1f} GiB"


def skip_reason(cell: Cell, machine: MachineView, rules: GpuRules) -> str | None:
    """Why ``cell`` cannot run on ``machine`` (no GPU, dtype, memory), or None."""
    if machine.has_gpu and cell.task == "kernel-gemm" and cell.params.get("backend") == "cpu-ref":
        # The CPU reference stands in for the GPU backends where there is none. Its timings
        # under a GPU's tag would sit in that GPU's tables as if the GPU had produced them.
        return "cpu-ref runs only on machines without a GPU (this one has a CUDA device)"
    if not cell.needs_gpu:
        return None
    if not machine.has_gpu:
        if cell.task == "kernel-quant":  # the small ones run on CPU (Triton interpreter)
            from slidesparse.tasks.kernel_quant import INTERPRETER_TOO_LARGE

            return f"no CUDA device ({INTERPRETER_TOO_LARGE})"
        return "no CUDA device"
    dtype, sparse = _cell_dtype(cell)
    if dtype is not None and dtype in GEMM_DTYPES:
        from slidesparse.hardware import capabilities

        caps = capabilities(machine.cc)
        if not caps.supports(dtype, sparse=sparse):
            return caps.reason(dtype, sparse=sparse)
    need = predicted_bytes(cell, rules)
    if need is not None and machine.memory_bytes:
        usable = machine.memory_bytes * rules.usable_memory_fraction
        if need > usable:
            return (
                f"predicted memory {_gib(need)} ({int(need)} bytes) exceeds usable "
                f"{_gib(usable)} of {_gib(machine.memory_bytes)}"
            )
    return None


def apply_rules(cells: Iterable[Cell], machine: MachineView, rules: GpuRules) -> list[Cell]:
    """Cells with ``skip_reason`` filled in for this machine."""
    return [replace(c, skip_reason=skip_reason(c, machine, rules)) for c in cells]
