"""Launch configurations of the quant kernels: the search space, the JSON store, the lookup.

A config is a small dict of launch parameters (``ROWS``/``BLOCK``/``num_warps`` for the quant
kernels, ``BLOCK_M``/``BLOCK_N``/``num_warps`` for dequant_bias). Tuned configs are data, one
JSON file per GPU tag, keyed ``kernel|dtypes|size|M bucket`` where size is K (quant kernels)
or N (dequant_bias) and the bucket is M rounded up to a power of two in [16, 65536].

Lookup order for a launch: the table in the cache folder the caller's context named with
:func:`use` (the runner's per-GPU cache, or a user's own tuning), then the table shipped in
``slidesparse/kernels/tuned/`` for this GPU tag (or, failing that, for the same GPU and
compute capability), then :func:`default_config`. Within a table the exact key wins, else the
nearest tuned M bucket of the same kernel, dtypes and size.
"""

from __future__ import annotations

import functools
import json
import warnings
from datetime import UTC, datetime
from pathlib import Path

from slidesparse.core.errors import UserError

SCHEMA_VERSION = 1
CACHE_FILE = "quant_kernels.json"  # name inside a per-GPU cache folder
_SHIPPED_DIR = Path(__file__).parent / "tuned"
M_BUCKET_MIN, M_BUCKET_MAX = 16, 65536

# The context kernels launch in: its GPU tag and per-GPU cache folder (see use()).
_context: dict[str, object] = {"gpu_tag": None, "cache_dir": None}


def _pow2_ceil(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def m_bucket(M: int) -> int:
    """M rounded up to a power of two, clamped to [16, 65536]."""
    return min(max(_pow2_ceil(M), M_BUCKET_MIN), M_BUCKET_MAX)


def make_key(kernel: str, dtypes: str, size: int, M: int) -> str:
    """The table key of one tuned case."""
    return f"{kernel}|{dtypes}|{size}|{m_bucket(M)}"


def _is_quant(kernel: str) -> bool:
    if kernel == "dequant_bias":
        return False
    if kernel == "quant_only" or kernel.startswith("quant_slide_"):
        return True
    raise UserError(
        f"unknown kernel {kernel!r}; valid: quant_only, quant_slide_<pattern>, dequant_bias"
    )


def row_length(kernel: str, size: int) -> int:
    """Columns one quant program writes per row: K_pad, or K_slide for quant_slide."""
    from slidesparse.core import sparsity
    from slidesparse.kernels import numerics

    if kernel == "quant_only":
        return numerics.ceil_to(size, numerics.K_ALIGN)
    return sparsity.k_slide(size, kernel.removeprefix("quant_slide_"))


def config_space(kernel: str, size: int) -> list[dict]:
    """Candidate configs of ``kernel`` at K (or N) = ``size``, default first."""
    if _is_quant(kernel):
        full = _pow2_ceil(row_length(kernel, size))
        space = []
        # Whole row in registers (one pass): 4 to 64 fp32 values per thread.
        for warps in (4, 8, 16):
            if 4 * 32 * warps <= full <= 64 * 32 * warps:
                space.append({"ROWS": 1, "BLOCK": full, "num_warps": warps})
        if full <= 2048:  # short rows: several per program
            space += [{"ROWS": rows, "BLOCK": full, "num_warps": 4} for rows in (2, 4)]
        # Two passes: find the maximum, then quantize (re-reading the row from L2).
        for block in (1024, 2048, 4096, 8192):
            for warps in (4, 8):
                if block < full:
                    space.append({"ROWS": 1, "BLOCK": block, "num_warps": warps})
        space += _group_space(kernel, size)
    else:
        n_max = max(16, _pow2_ceil(size))
        shapes = ((1, 1024, 4), (4, 512, 4), (8, 512, 4), (8, 1024, 8), (16, 256, 4), (16, 512, 8))
        space = [{"BLOCK_M": bm, "BLOCK_N": min(bn, n_max), "num_warps": w} for bm, bn, w in shapes]
    default = default_config(kernel, size, M_BUCKET_MAX)
    unique = [default] + [c for c in space if c != default]
    return [dict(c) for c in {json.dumps(c, sort_keys=True): c for c in unique}.values()]


def _group_space(kernel: str, size: int) -> list[dict]:
    """Configs of quant_slide's group kernel (finite L): GROUPS source groups per step, whole
    row (one pass; SPLIT picks the store) or 1024..8192 source lanes per step (two passes)."""
    from slidesparse.core import sparsity

    if not kernel.startswith("quant_slide_"):
        return []
    L = sparsity.parse_pattern(kernel.removeprefix("quant_slide_")).L
    if L is None:
        return []
    lanes = _pow2_ceil(L)  # a group's tile width
    n_groups = -(-row_length(kernel, size) // (2 * L - 4))
    full = _pow2_ceil(n_groups)
    space = []
    if full * lanes <= 8192:
        space += [
            {"ROWS": 1, "GROUPS": full, "SPLIT": split, "num_warps": w}
            for split in (0, 1)
            for w in (4, 8)
            if 4 * 32 * w <= full * lanes or w == 4
        ]
    space += [
        {"ROWS": 1, "GROUPS": tile // lanes, "SPLIT": 0, "num_warps": w}
        for tile, w in ((1024, 4), (2048, 4), (4096, 4), (4096, 8), (8192, 8))
        if tile // lanes < full
    ]
    return space


def default_config(kernel: str, size: int, M: int) -> dict:
    """An untuned config that is reasonable on any recent GPU."""
    del M  # the defaults do not depend on M; tuned tables do
    if _is_quant(kernel):
        full = _pow2_ceil(row_length(kernel, size))
        if full <= 8192:
            return {"ROWS": 1, "BLOCK": full, "num_warps": max(4, min(16, full // 512))}
        return {"ROWS": 1, "BLOCK": 4096, "num_warps": 8}
    return {"BLOCK_M": 8, "BLOCK_N": min(512, max(16, _pow2_ceil(size))), "num_warps": 4}


# --- the JSON store ------------------------------------------------------------------------


def empty_table(gpu_tag: str) -> dict:
    """A table with no entries for ``gpu_tag``."""
    return {"schema_version": SCHEMA_VERSION, "gpu_tag": gpu_tag, "entries": {}}


def load_table(path: Path) -> dict:
    """Read one table; UserError if it is not a table this version understands."""
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(
            f"{path}: cannot read tuned configs ({exc}); delete it and re-tune"
        ) from exc
    version = table.get("schema_version") if isinstance(table, dict) else None
    if version != SCHEMA_VERSION:
        raise UserError(
            f"{path}: tuned-config schema version {version!r}, this slidesparse reads "
            f"{SCHEMA_VERSION}; re-run `slidesparse tune kernels` to rebuild it"
        )
    if not isinstance(table.get("entries"), dict):
        raise UserError(f"{path}: tuned configs without an 'entries' object; re-tune")
    return table


def save_entries(path: Path, gpu_tag: str, entries: dict) -> dict:
    """Merge ``entries`` (key -> record) into the table at ``path``, written atomically."""
    from slidesparse.core.atomic import atomic_write_text

    path = Path(path)
    table = load_table(path) if path.exists() else empty_table(gpu_tag)
    if table["gpu_tag"] != gpu_tag:
        raise UserError(f"{path} holds configs of {table['gpu_tag']}, not {gpu_tag}")
    table["entries"].update(entries)
    table["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True) + "\n")
    _clear_caches()
    return table


def shipped_path(gpu_tag: str) -> Path | None:
    """The shipped table for ``gpu_tag``, or for the same GPU and cc (other Python/CUDA)."""
    exact = _SHIPPED_DIR / f"{gpu_tag}.json"
    if exact.exists():
        return exact
    prefix = "_".join(gpu_tag.split("_")[:2]) + "_"
    same_gpu = sorted(_SHIPPED_DIR.glob(f"{prefix}*.json"))
    return same_gpu[0] if same_gpu else None


def use(gpu_tag: str | None = None, cache_dir: Path | str | None = None) -> None:
    """Launch kernels as the context says: its GPU tag, and the cache folder whose
    ``quant_kernels.json`` is consulted before the shipped configs.

    A task calls this with ``ctx.gpu_tag`` and ``ctx.cache_dir`` before it launches kernels;
    without a tag, the current CUDA device's tag is used.
    """
    _context["gpu_tag"] = gpu_tag
    _context["cache_dir"] = Path(cache_dir) if cache_dir is not None else None
    _clear_caches()


@functools.cache
def _tables(gpu_tag: str | None) -> tuple[dict, ...]:
    cache_dir = _context["cache_dir"]
    paths = [cache_dir / CACHE_FILE] if isinstance(cache_dir, Path) else []
    if gpu_tag is not None:
        paths.append(shipped_path(gpu_tag))
    tables = []
    for path in paths:
        if path is None or not path.exists():
            continue
        try:
            table = load_table(path)
        except UserError as exc:
            warnings.warn(f"ignoring tuned configs: {exc}", stacklevel=2)
            continue
        if gpu_tag is None or table["gpu_tag"].split("_")[:2] == gpu_tag.split("_")[:2]:
            tables.append(table)
    return tuple(tables)


def _clear_caches() -> None:
    _tables.cache_clear()
    _lookup.cache_clear()


def current_gpu_tag() -> str | None:
    """The GPU tag launches use: the context's, else the current CUDA device's; None under the
    Triton interpreter."""
    from slidesparse.kernels.numerics import interpreting

    if interpreting():
        return None
    if _context["gpu_tag"]:
        return str(_context["gpu_tag"])
    import torch

    from slidesparse.core.hardware import device_tag

    return device_tag(torch.cuda.current_device())


def _match(tables, kernel: str, dtypes: str, size: int, M: int) -> tuple[dict | None, str]:
    """(record, where it came from): the exact key (``tuned``), else the nearest tuned M bucket
    of the same kernel, dtypes and size (``nearest M``), else (None, ``default``)."""
    key = make_key(kernel, dtypes, size, M)
    for table in tables:
        if key in table["entries"]:
            return table["entries"][key], "tuned"
    prefix = f"{kernel}|{dtypes}|{size}|"
    want = m_bucket(M).bit_length()
    for table in tables:
        near = [
            (abs(int(k[len(prefix) :]).bit_length() - want), k)
            for k in table["entries"]
            if k.startswith(prefix)
        ]
        if near:
            return table["entries"][min(near)[1]], "nearest M"
    return None, "default"


def find_entry(tables, kernel: str, dtypes: str, size: int, M: int) -> dict | None:
    """The best matching record: exact key first, then the nearest tuned M bucket."""
    return _match(tables, kernel, dtypes, size, M)[0]


# Cases launched on an untuned config in this process (key -> "default" | "nearest M"): a
# benchmark that ran one says so in its rows instead of passing its figure off as tuned.
_UNTUNED: dict[str, str] = {}


@functools.cache
def _lookup(gpu_tag: str | None, kernel: str, dtypes: str, size: int, bucket: int) -> dict:
    entry, source = _match(_tables(gpu_tag), kernel, dtypes, size, bucket)
    if source != "tuned":
        _UNTUNED[make_key(kernel, dtypes, size, bucket)] = source
    if entry is None:
        return default_config(kernel, size, bucket)
    return dict(entry["config"])


def config_source(kernel: str, dtypes: str, size: int, M: int, tables=None) -> str:
    """Where a launch's config comes from: ``tuned`` (this exact case), ``nearest M`` (the
    same kernel, dtypes and size tuned at another M bucket) or ``default`` (nothing tuned)."""
    tables = _tables(current_gpu_tag()) if tables is None else tables
    return _match(tables, kernel, dtypes, size, M)[1]


def untuned_launches() -> dict[str, str]:
    """Every case this process launched on an untuned config: key -> its config source."""
    return dict(_UNTUNED)


def config_for(kernel: str, dtypes: str, size: int, M: int) -> dict:
    """The config a launch uses: tuned if any table has one, else :func:`default_config`."""
    return dict(_lookup(current_gpu_tag(), kernel, dtypes, size, m_bucket(M)))
