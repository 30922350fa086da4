"""Matrix files: typed, validated YAML that expands into cells the runner schedules.

A matrix file (``matrix/<preset>.yaml`` shipped in the package, or any user path) is a list
of blocks; each block names a task and the axes whose cartesian product it covers::

    description: what this preset is for
    blocks:
      - task: kernel-gemm
        axes: {mode: [square], backend: [cpu-ref], dtype: [int8], sparsity: [dense, 2_8], M: [64]}

A block may also set ``timeout_s`` (seconds per cell) and ``target_spread``: the relative
spread of the median every adaptive timing of its cells aims for (:mod:`slidesparse.core.timing`;
default 0.01); a top-level ``target_spread`` sets it for every block that names none. Neither
is part of a cell's identity.

The axes of a block are validated against the model its task registered
(:mod:`slidesparse.tasks`); this module knows no task by name. Unknown keys, typos and bad
values are :class:`~slidesparse.core.errors.UserError` naming the file, the key and the
allowed values. A cell is one point of a block's product; its ``cell_id`` hashes the task and
its defining parameters, so it is stable across runs, machines and shards.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slidesparse.core.errors import UserError
from slidesparse.tasks import get_task, task_names

# A relative spread: 0.01 is ±1% of the median.
TargetSpread = Annotated[float, Field(gt=0, lt=1)]


class _BlockFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str
    name: str | None = None
    timeout_s: Annotated[float, Field(gt=0)] | None = None
    target_spread: TargetSpread | None = None
    axes: dict[str, Any] = Field(default_factory=dict)


class _MatrixFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    target_spread: TargetSpread | None = None
    blocks: Annotated[list[_BlockFile], Field(min_length=1)]


@dataclass(frozen=True)
class Block:
    """One validated block: its task, label, timeout override, typed axes and spread target."""

    task: str
    name: str | None
    timeout_s: float | None
    axes: Any  # the task's axes model; .points() yields cell params
    target_spread: float | None = None  # None: the task context's default


@dataclass(frozen=True)
class Matrix:
    """A whole validated matrix file."""

    description: str
    blocks: list[Block]


@dataclass(frozen=True)
class Cell:
    """One unit of work: a task with its defining parameters."""

    task: str
    params: Mapping[str, Any]
    cell_id: str
    timeout_s: float | None = None  # None: the task's registered default
    skip_reason: str | None = None  # set by the per-GPU rules: recorded skipped, never run
    block: str = ""
    target_spread: float | None = None  # None: the task context's default

    @property
    def group_key(self) -> str:
        """What cells sharing setup have in common: everything but M (shard + order key)."""
        rest = {k: v for k, v in self.params.items() if k != "M"}
        return self.task + ":" + json.dumps(rest, sort_keys=True, default=str)

    @property
    def needs_gpu(self) -> bool:
        """Whether this cell can only run on a CUDA device (its task decides per cell)."""
        return get_task(self.task).needs_gpu(self.params)

    def describe(self) -> str:
        """A short human label: task and the parameters that vary."""
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items() if v is not None)
        return f"{self.task}({shown})"


def cell_id(task: str, params: Mapping[str, Any]) -> str:
    """Stable id of a cell: a hash of its task and defining parameters."""
    text = json.dumps({"task": task, "params": dict(params)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def format_errors(source: str, exc: ValidationError, prefix: tuple = (), allowed=()) -> str:
    """One line naming ``source``, the key path and the problem of a pydantic error.

    ``prefix`` is where the validated mapping sits in the file; ``allowed`` lists the keys
    valid at the level where an unknown key was found.
    """
    # An unknown key usually explains a "missing" one next to it (a typo), so it goes first.
    errs = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    first = errs[0]
    loc = ".".join(str(p) for p in (*prefix, *first["loc"])) or "(top level)"
    msg = {
        "extra_forbidden": "unknown key (check the spelling)",
        "missing": "required key is missing",
        "too_short": "empty axis: give at least one value",
    }.get(first["type"], first["msg"])
    if first["type"] == "extra_forbidden" and allowed:
        msg += "; allowed: " + ", ".join(allowed)
    got = first.get("input")
    tail = f" (got {got!r})" if not isinstance(got, dict | list) and got is not None else ""
    more = f" [and {len(errs) - 1} more problem(s)]" if len(errs) > 1 else ""
    return f"{source}: {loc}: {msg}{tail}{more}"


def _file_keys(loc: tuple) -> list[str]:
    model = _BlockFile if "blocks" in loc else _MatrixFile
    return list(model.model_fields)


class _Loader(yaml.SafeLoader):
    """YAML 1.2 numbers: ``2_8`` and ``6:8`` stay strings (YAML 1.1 reads 28 and 368); a key
    given twice in one mapping is an error (plain YAML lets the last value silently win)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice; keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if not tag.endswith((":int", ":float"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text with YAML 1.2 number rules (so pattern names stay strings)."""
    return yaml.load(text, Loader=_Loader)


def _block(source: str, i: int, raw: _BlockFile, target_spread: float | None) -> Block:
    if raw.task not in task_names():
        names = ", ".join(repr(n) for n in task_names())
        raise UserError(f"{source}: blocks.{i}.task: unknown task {raw.task!r}; valid: {names}")
    model = get_task(raw.task).axes
    try:
        axes = model.model_validate(raw.axes)
    except ValidationError as exc:
        raise UserError(
            format_errors(source, exc, ("blocks", i, "axes"), list(model.model_fields))
        ) from None
    try:
        n = sum(1 for _ in axes.points())
    except ValueError as exc:
        raise UserError(f"{source}: blocks.{i}: {exc}") from None
    if n == 0:
        raise UserError(
            f"{source}: blocks.{i} ({raw.task}) expands to no cells: no backend in it "
            "implements any of its sparsities (dense backends pair with 'dense', sparse "
            "ones with 2_L)"
        )
    spread = raw.target_spread if raw.target_spread is not None else target_spread
    return Block(raw.task, raw.name, raw.timeout_s, axes, spread)


def parse_matrix(text: str, source: str = "<matrix>") -> Matrix:
    """Parse and validate matrix YAML; UserError names the file, key and allowed values."""
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{source}:{line}: YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        raise UserError(
            f"{source}: a matrix file is a mapping with 'blocks'; got {type(data).__name__}"
        )
    try:
        raw = _MatrixFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]["loc"]
        raise UserError(format_errors(source, exc, allowed=_file_keys(first))) from None
    blocks = [_block(source, i, b, raw.target_spread) for i, b in enumerate(raw.blocks)]
    return Matrix(raw.description, blocks)


def _matrix_dir() -> Any:
    # Installed: the package-dir mapping makes matrix/ the package slidesparse.matrix_files.
    # Source checkout on PYTHONPATH: the same files sit in ../matrix next to the package.
    try:
        return resources.files("slidesparse.matrix_files")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "matrix"


def preset_names() -> list[str]:
    """Matrix presets shipped with the package."""
    files = _matrix_dir()
    return sorted(p.name[: -len(".yaml")] for p in files.iterdir() if p.name.endswith(".yaml"))


def load_matrix(preset_or_path: str | Path) -> tuple[Matrix, str]:
    """Load a shipped preset by name, or a matrix file by path; return it and its source."""
    path = Path(preset_or_path)
    # Only a file (or a .yaml name) is a path: a results folder called "smoke" in the working
    # directory must not shadow the preset of that name.
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise UserError(f"matrix file {path} does not exist")
        return parse_matrix(path.read_text(encoding="utf-8"), str(path)), str(path)
    name = str(preset_or_path)
    if name not in preset_names():
        raise UserError(
            f"unknown preset {name!r}; presets: {', '.join(preset_names())} "
            "(or pass a path to a .yaml matrix file)"
        )
    res = _matrix_dir() / f"{name}.yaml"
    return parse_matrix(res.read_text(encoding="utf-8"), f"matrix/{name}.yaml"), name


def expand(matrix: Matrix) -> list[Cell]:
    """All cells of a matrix, deduplicated by cell_id, in file order."""
    cells: dict[str, Cell] = {}
    for i, block in enumerate(matrix.blocks):
        label = block.name or f"blocks.{i}"
        for params in block.axes.points():
            cid = cell_id(block.task, params)
            cell = Cell(block.task, params, cid, block.timeout_s, None, label, block.target_spread)
            cells.setdefault(cid, cell)
    return list(cells.values())


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) as a tuple; UserError otherwise."""
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise UserError(f"bad --shard {text!r}; write i/n with 0 <= i < n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"bad --shard {text!r}; need 0 <= i < n, e.g. 0/4 ... 3/4")
    return i, n


def shard(cells: Iterable[Cell], index: int, count: int) -> list[Cell]:
    """The cells of shard ``index`` of ``count``: whole groups, assigned by hash.

    A group is the cells of one task with the same shard key (the task's, else everything
    but M), so cells that need each other (a sparse GEMM and its dense baseline) share a
    shard. Depends only on each cell's own parameters, so every machine computes the same
    split without coordination.
    """

    def owner(cell: Cell) -> int:
        # A task's shard key may be shared by other tasks' cells (an engine's prefill and
        # decode): it is hashed as it is. The group key holds the task name already.
        key = get_task(cell.task).shard_key(cell.params) or cell.group_key
        digest = hashlib.sha256(key.encode()).digest()
        return int.from_bytes(digest[:8], "big") % count

    return [c for c in cells if owner(c) == index]


def estimate_seconds(durations: Mapping[str, float], cell: Cell) -> float | None:
    """Expected duration of ``cell`` from earlier medians keyed by task[/backend]."""
    backend = cell.params.get("backend")
    for key in (f"{cell.task}/{backend}", cell.task):
        if key in durations and not math.isnan(durations[key]):
            return durations[key]
    return None
