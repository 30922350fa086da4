"""Matrix files: typed, validated YAML that expands into cells the runner schedules.

A matrix file (``matrix/<preset>.yaml`` shipped in the package, or any user path) is a list
of blocks; each block names a task and the axes whose cartesian product it covers::

    description: what this preset is for
    blocks:
      - task: kernel-gemm
        axes: {mode: [square], backend: [cpu-ref], dtype: [int8], sparsity: [dense, 2_8], M: [64]}

Unknown keys, typos and bad values are :class:`~slidesparse.errors.UserError` naming the
file, the key and the allowed values. A cell is one point of a block's product; its
``cell_id`` hashes the task and its defining parameters, so it is stable across runs,
machines and shards. Per-GPU rules (``matrix/gpu_rules.yaml``) turn cells this machine cannot
run into skips with a reason, before any worker starts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
)

from slidesparse.errors import UserError
from slidesparse.models import LAYERS

RULES_FILE = "gpu_rules.yaml"  # data for slidesparse.gpu_rules, not a preset
GEMM_BACKENDS = ("cpu-ref", "cublaslt", "cusparselt", "torch-builtin", "torch-cslt")
# Which sparsities a backend implements: dense weights, slid 2:4 weights, or both.
_BACKEND_KIND = {
    "cpu-ref": "both",
    "cublaslt": "dense",
    "torch-builtin": "dense",
    "cusparselt": "sparse",
    "torch-cslt": "sparse",
    "cutlass": "dense",
}
QUANT_KERNELS = ("quant_only", "quant_slide", "dequant_bias")
# Fallback per-task timeouts for planning; the registered TaskSpec default wins at run time.
DEFAULT_TIMEOUT_S = {
    "noop": 60.0,
    "kernel-gemm": 900.0,
    "kernel-quant": 300.0,
    "e2e-prefill": 3600.0,
    "e2e-decode": 3600.0,
    "tune": 3600.0,
}


def _as_list(value: Any) -> Any:
    # A scalar axis value is a one-point axis; None stays None so "missing" still errors.
    if value is None or isinstance(value, list):
        return value
    return [value]


def _canonical_sparsity(value: Any) -> str:
    from slidesparse.sparsity import parse_pattern

    if not isinstance(value, str | int):
        raise ValueError(f"sparsity must be a string like '2_8' or '6:8', got {value!r}")
    try:
        return parse_pattern(str(value)).name
    except Exception as exc:  # parse_pattern raises UserError; pydantic wants ValueError
        raise ValueError(str(exc)) from None


def _known_model(value: Any) -> str:
    from slidesparse.models import MODELS

    if value not in MODELS:
        raise ValueError(f"unknown model {value!r}; allowed: {', '.join(MODELS)}")
    return value


def _axis(item_type: Any) -> Any:
    return Annotated[list[item_type], BeforeValidator(_as_list), Field(min_length=1), "axis"]


Sparsity = Annotated[str, BeforeValidator(_canonical_sparsity)]
ModelName = Annotated[str, BeforeValidator(_known_model)]
GemmDtype = Literal["fp16", "bf16", "int8", "fp8", "fp4"]
W8A8Dtype = Literal["int8", "fp8"]


class _Axes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def points(self) -> Iterator[dict[str, Any]]:
        """The block's cartesian product, already filtered to meaningful combinations."""
        raise NotImplementedError


def _product(**axes: Iterable[Any]) -> Iterator[dict[str, Any]]:
    names = list(axes)
    for values in itertools.product(*(list(axes[n]) for n in names)):
        yield dict(zip(names, values, strict=True))


def _pairs(backend: str, sparsity: str) -> bool:
    kind = _BACKEND_KIND[backend]
    return kind == "both" or (kind == "dense") == (sparsity == "dense")


class GemmAxes(_Axes):
    """kernel-gemm: model shapes (each layer of each model) or square M=N=K."""

    mode: _axis(Literal["model", "square"])
    backend: _axis(Literal[GEMM_BACKENDS])  # type: ignore[valid-type]
    dtype: _axis(GemmDtype)
    sparsity: _axis(Sparsity)
    M: _axis(PositiveInt)
    model: _axis(ModelName) | None = None
    layer: _axis(Literal[LAYERS]) | None = None  # type: ignore[valid-type]
    # Square mode: N = K = each value here; absent, N = K = M (the paper's M=N=K).
    NK: _axis(PositiveInt) | None = None

    def points(self) -> Iterator[dict[str, Any]]:
        from slidesparse.models import get_model

        for mode in self.mode:
            if mode == "model":
                if not self.model:
                    raise ValueError("mode 'model' needs a 'model' axis")
                shapes = [
                    (m, layer, *get_model(m).layers[layer])
                    for m in self.model
                    for layer in (self.layer or LAYERS)
                ]
            else:
                shapes = [(None, None, None, None)]
            for (model, layer, n, k), backend, dtype, sparsity, m in itertools.product(
                shapes, self.backend, self.dtype, self.sparsity, self.M
            ):
                if not _pairs(backend, sparsity):
                    continue
                if mode == "square":
                    for nk in self.NK or [m]:
                        yield dict(
                            mode=mode,
                            model=None,
                            layer=None,
                            M=m,
                            N=nk,
                            K=nk,
                            dtype=dtype,
                            backend=backend,
                            sparsity=sparsity,
                        )
                else:
                    yield dict(
                        mode=mode,
                        model=model,
                        layer=layer,
                        M=m,
                        N=n,
                        K=k,
                        dtype=dtype,
                        backend=backend,
                        sparsity=sparsity,
                    )


class QuantAxes(_Axes):
    """kernel-quant: the three fused Triton kernels over M and K (N for dequant_bias)."""

    kernel: _axis(Literal[QUANT_KERNELS])  # type: ignore[valid-type]
    M: _axis(PositiveInt)
    K: _axis(PositiveInt) | None = None  # quant_only / quant_slide
    N: _axis(PositiveInt) | None = None  # dequant_bias
    sparsity: _axis(Sparsity) = ["dense"]
    in_dtype: _axis(Literal["bf16", "fp16", "int32", "fp32"]) = ["bf16"]
    out_dtype: _axis(Literal["int8", "fp8", "bf16"]) = ["int8"]

    def points(self) -> Iterator[dict[str, Any]]:
        for kernel in self.kernel:
            size_name = "N" if kernel == "dequant_bias" else "K"
            sizes = getattr(self, size_name)
            if not sizes:
                raise ValueError(f"kernel {kernel} needs a '{size_name}' axis")
            for p in _product(
                sparsity=self.sparsity,
                M=self.M,
                size=sizes,
                in_dtype=self.in_dtype,
                out_dtype=self.out_dtype,
            ):
                if (kernel == "quant_slide") == (p["sparsity"] == "dense"):
                    continue  # only quant_slide has a sparsity
                if kernel == "dequant_bias":
                    ok = p["in_dtype"] in ("int32", "bf16", "fp32") and p["out_dtype"] == "bf16"
                else:
                    ok = p["in_dtype"] in ("bf16", "fp16") and p["out_dtype"] in ("int8", "fp8")
                if ok:
                    size = p.pop("size")
                    yield {"kernel": kernel, **p, size_name: size}


class E2EAxes(_Axes):
    """e2e-prefill / e2e-decode: vLLM throughput per model, dtype, backend, pattern and M."""

    model: _axis(ModelName)
    dtype: _axis(W8A8Dtype)
    backend: _axis(Literal["cutlass", "cublaslt", "cusparselt"])
    sparsity: _axis(Sparsity)
    M: _axis(PositiveInt)

    def points(self) -> Iterator[dict[str, Any]]:
        for p in _product(
            model=self.model,
            dtype=self.dtype,
            backend=self.backend,
            sparsity=self.sparsity,
            M=self.M,
        ):
            if _pairs(p["backend"], p["sparsity"]):
                yield p


class TuneAxes(QuantAxes):
    """tune: search the fused kernels' launch configs for these cases (once per GPU)."""


class NoopAxes(_Axes):
    """noop: the runner's test and overhead task; ``action`` injects faults."""

    action: _axis(
        Literal[
            "ok",
            "sleep",
            "raise",
            "abort",
            "segfault",
            "hang",
            "spawn_hang",
            "exit",
            "unsupported",
            "oom",
            "cuda_illegal_instruction",
            "cuda_illegal_address",
            "stderr_illegal_address",
        ]
    ) = ["ok"]
    index: _axis(int) | None = None
    count: PositiveInt | None = None  # shorthand for index: [0, 1, ..., count-1]
    sleep_s: _axis(Annotated[float, Field(ge=0)]) = [0.0]
    gpu: bool = False

    def points(self) -> Iterator[dict[str, Any]]:
        index = self.index or list(range(self.count or 1))
        for p in _product(action=self.action, index=index, sleep_s=self.sleep_s):
            yield {**p, "gpu": self.gpu}


_AXES = {
    "kernel-gemm": GemmAxes,
    "kernel-quant": QuantAxes,
    "e2e-prefill": E2EAxes,
    "e2e-decode": E2EAxes,
    "tune": TuneAxes,
    "noop": NoopAxes,
}


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    timeout_s: Annotated[float, Field(gt=0)] | None = None


class GemmBlock(_Block):
    """A kernel-gemm block."""

    task: Literal["kernel-gemm"]
    axes: GemmAxes


class QuantBlock(_Block):
    """A kernel-quant block."""

    task: Literal["kernel-quant"]
    axes: QuantAxes


class PrefillBlock(_Block):
    """An e2e-prefill block."""

    task: Literal["e2e-prefill"]
    axes: E2EAxes


class DecodeBlock(_Block):
    """An e2e-decode block."""

    task: Literal["e2e-decode"]
    axes: E2EAxes


class TuneBlock(_Block):
    """A tune block."""

    task: Literal["tune"]
    axes: TuneAxes


class NoopBlock(_Block):
    """A noop block (runner tests and overhead benchmark)."""

    task: Literal["noop"]
    axes: NoopAxes = NoopAxes()


Block = Annotated[
    GemmBlock | QuantBlock | PrefillBlock | DecodeBlock | TuneBlock | NoopBlock,
    Field(discriminator="task"),
]


class MatrixFile(BaseModel):
    """A whole matrix file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    blocks: Annotated[list[Block], Field(min_length=1)]


@dataclass(frozen=True)
class Cell:
    """One unit of work: a task with its defining parameters."""

    task: str
    params: Mapping[str, Any]
    cell_id: str
    timeout_s: float | None = None  # None: the task's registered default
    skip_reason: str | None = None  # set by the per-GPU rules: recorded skipped, never run
    block: str = ""

    @property
    def group_key(self) -> str:
        """What cells sharing setup have in common: everything but M (shard + order key)."""
        rest = {k: v for k, v in self.params.items() if k != "M"}
        return self.task + ":" + json.dumps(rest, sort_keys=True, default=str)

    @property
    def needs_gpu(self) -> bool:
        """Whether this cell can only run on a CUDA device."""
        if self.task == "noop":
            return bool(self.params.get("gpu"))
        if self.task == "kernel-gemm":
            return self.params.get("backend") != "cpu-ref"
        if self.task == "kernel-quant":
            # Small cells run on CPU under the Triton interpreter.
            from slidesparse.tasks.kernel_quant import fits_interpreter

            return not fits_interpreter(self.params)
        return True

    def describe(self) -> str:
        """A short human label: task and the parameters that vary."""
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items() if v is not None)
        return f"{self.task}({shown})"


def cell_id(task: str, params: Mapping[str, Any]) -> str:
    """Stable id of a cell: a hash of its task and defining parameters."""
    text = json.dumps({"task": task, "params": dict(params)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _allowed_keys(loc: tuple) -> list[str]:
    tag = next((p for p in loc if p in _AXES), None)
    if tag is None:
        return list(MatrixFile.model_fields)
    if "axes" in loc:
        return list(_AXES[tag].model_fields)
    return ["task", "name", "timeout_s", "axes"]


def _format_errors(source: str, exc: ValidationError) -> str:
    # An unknown key usually explains a "missing" one next to it (a typo), so it goes first.
    errs = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    first = errs[0]
    loc = ".".join(str(p) for p in first["loc"] if p not in _AXES) or "(top level)"
    msg = {
        "extra_forbidden": "unknown key (check the spelling)",
        "missing": "required key is missing",
        "too_short": "empty axis: give at least one value",
    }.get(first["type"], first["msg"])
    if first["type"] == "extra_forbidden":
        msg += "; allowed: " + ", ".join(_allowed_keys(first["loc"]))
    got = first.get("input")
    tail = f" (got {got!r})" if not isinstance(got, dict | list) and got is not None else ""
    more = f" [and {len(errs) - 1} more problem(s)]" if len(errs) > 1 else ""
    return f"{source}: {loc}: {msg}{tail}{more}"


class _Loader(yaml.SafeLoader):
    """YAML 1.2 numbers: ``2_8`` and ``6:8`` stay strings (YAML 1.1 reads 28 and 368)."""


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


def parse_matrix(text: str, source: str = "<matrix>") -> MatrixFile:
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
        matrix = MatrixFile.model_validate(data)
    except ValidationError as exc:
        raise UserError(_format_errors(source, exc)) from None
    for i, block in enumerate(matrix.blocks):
        try:
            n = sum(1 for _ in block.axes.points())
        except ValueError as exc:
            raise UserError(f"{source}: blocks.{i}: {exc}") from None
        if n == 0:
            raise UserError(
                f"{source}: blocks.{i} ({block.task}) expands to no cells: no backend in it "
                "implements any of its sparsities (dense backends pair with 'dense', sparse "
                "ones with 2_L)"
            )
    return matrix


def _matrix_dir() -> Any:
    # Installed: the package-dir mapping makes matrix/ the package slidesparse.matrix_files.
    # Source checkout on PYTHONPATH: the same files sit in ../matrix next to the package.
    try:
        return resources.files("slidesparse.matrix_files")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "matrix"


def preset_names() -> list[str]:
    """Matrix presets shipped with the package."""
    files = _matrix_dir()
    return sorted(
        p.name[: -len(".yaml")]
        for p in files.iterdir()
        if p.name.endswith(".yaml") and p.name != RULES_FILE
    )


def load_matrix(preset_or_path: str | Path) -> tuple[MatrixFile, str]:
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


def expand(matrix: MatrixFile) -> list[Cell]:
    """All cells of a matrix, deduplicated by cell_id, in file order."""
    cells: dict[str, Cell] = {}
    for i, block in enumerate(matrix.blocks):
        label = block.name or f"blocks.{i}"
        for params in block.axes.points():
            cid = cell_id(block.task, params)
            cells.setdefault(cid, Cell(block.task, params, cid, block.timeout_s, None, label))
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
    """The cells of shard ``index`` of ``count``: whole setup groups, assigned by hash.

    Depends only on each cell's own parameters, so every machine computes the same split
    without coordination; groups stay together so setup is reused within a shard.
    """

    def owner(cell: Cell) -> int:
        digest = hashlib.sha256(cell.group_key.encode()).digest()
        return int.from_bytes(digest[:8], "big") % count

    return [c for c in cells if owner(c) == index]


def estimate_seconds(durations: Mapping[str, float], cell: Cell) -> float | None:
    """Expected duration of ``cell`` from earlier medians keyed by task[/backend]."""
    backend = cell.params.get("backend")
    for key in (f"{cell.task}/{backend}", cell.task):
        if key in durations and not math.isnan(durations[key]):
            return durations[key]
    return None
