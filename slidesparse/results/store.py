"""The results store: the only module that touches Parquet.

Layout under a results root::

    <root>/<gpu_tag>/machine.json            machine record (hardware.MachineRecord.to_dict())
    <root>/<gpu_tag>/parts/<name>.parquet    result rows, one immutable part file per flush
    <root>/<gpu_tag>/quarantine/             corrupt part files moved aside, never deleted
    <root>/<gpu_tag>/runs/<run_id>.jsonl     the runner's event log
    <root>/<gpu_tag>/cache/                  searched algorithms, tuned kernel configs

Every part file carries ``slidesparse.schema_version`` in its Parquet metadata. Files are
written to a temporary name and renamed, so a reader never sees half a file; rows carry a
unique ``row_id`` so that re-reading, compacting or merging the same rows twice is harmless.
"""

from __future__ import annotations

import json
import shutil
import uuid
import warnings
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from slidesparse.core.atomic import atomic_write, atomic_write_text
from slidesparse.core.errors import StoreWarning, UserError

SCHEMA_VERSION = 1
_VERSION_KEY = b"slidesparse.schema_version"

STATUSES = ("ok", "failed", "skipped")
ERROR_CLASSES = (
    "cuda_illegal_instruction",
    "cuda_illegal_address",
    "oom",
    "timeout",
    "crash",
    "unsupported",
    "error",
)

_STR = pa.string()
_I64 = pa.int64()
_F64 = pa.float64()

SCHEMA = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("row_id", _STR),
        ("run_id", _STR),
        ("cell_id", _STR),
        ("gpu_tag", _STR),
        ("source", _STR),  # "run" or "legacy"
        ("task", _STR),
        ("model", _STR),
        ("layer", _STR),
        ("mode", _STR),  # model | square | prefill | decode | quant
        ("dtype", _STR),
        ("out_dtype", _STR),
        ("backend", _STR),
        ("kernel", _STR),  # what actually ran, e.g. "cublasLtMatmul" or "torch._scaled_mm"
        ("sparsity", _STR),  # canonical: dense, 2_4 ... 2_16, 2_inf
        ("M", _I64),
        ("N", _I64),
        ("K", _I64),
        ("K_slide", _I64),
        ("status", _STR),
        ("error_class", _STR),
        ("error_message", _STR),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("duration_s", _F64),
        ("latency_us", _F64),  # median
        ("latency_p25_us", _F64),
        ("latency_p75_us", _F64),
        ("latency_min_us", _F64),
        ("n_samples", _I64),
        # Half the 95% confidence interval of the median over the median (core/timing.py), and
        # whether it reached the measurement's target before the time cap (null: fixed count).
        ("latency_spread", _F64),
        ("spread_met", pa.bool_()),
        ("tops", _F64),  # tera-ops/s (TFLOPS for float dtypes)
        ("gbps", _F64),  # achieved GB/s for memory-bound kernels
        ("tokens_per_s", _F64),
        ("requests_per_s", _F64),
        ("elapsed_s", _F64),
        ("prompt_len", _I64),
        ("output_len", _I64),
        ("max_num_seqs", _I64),
        ("num_prompts", _I64),
        ("alg_id", _I64),
        ("split_k", _I64),
        ("workspace_bytes", _I64),
        ("timer", _STR),
        ("baseline_suspect", pa.bool_()),
        ("correct", pa.bool_()),
        ("max_abs_err", _F64),
        ("versions", _STR),  # JSON object: torch, triton, cuda, cusparselt, cublaslt, ...
        ("extra", _STR),  # JSON object: anything else a task wants to keep
    ],
    metadata={_VERSION_KEY: str(SCHEMA_VERSION).encode()},
)

COLUMNS = tuple(SCHEMA.names)
_JSON_COLUMNS = ("versions", "extra")
# Columns that identify what was measured; two rows equal on these describe the same cell.
KEY_COLUMNS = (
    "gpu_tag",
    "task",
    "model",
    "layer",
    "mode",
    "dtype",
    "out_dtype",
    "backend",
    "sparsity",
    "M",
    "N",
    "K",
)


def new_run_id() -> str:
    """A sortable, unique run id: UTC timestamp plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def normalize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults, encode JSON columns, reject unknown columns and bad status values."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown result columns: {sorted(unknown)}")
    out: dict[str, Any] = dict.fromkeys(COLUMNS)
    out.update(row)
    out["schema_version"] = SCHEMA_VERSION
    out["row_id"] = out["row_id"] or uuid.uuid4().hex
    out["source"] = out["source"] or "run"
    if out["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {out['status']!r}")
    if out["error_class"] is not None and out["error_class"] not in ERROR_CLASSES:
        raise ValueError(f"error_class must be one of {ERROR_CLASSES}, got {out['error_class']!r}")
    for col in _JSON_COLUMNS:
        if out[col] is not None and not isinstance(out[col], str):
            out[col] = json.dumps(out[col], sort_keys=True, default=str)
    if isinstance(out["started_at"], str):
        out["started_at"] = datetime.fromisoformat(out["started_at"])
    if out["started_at"] is None:
        out["started_at"] = datetime.now(UTC)
    return out


def rows_to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Normalized rows as an Arrow table in the store schema."""
    normalized = [normalize_row(r) for r in rows]
    return pa.Table.from_pylist(normalized, schema=SCHEMA)


# Rows per Parquet row group. A damaged region of a file costs the groups it touches, not the
# file: readers fall back to reading group by group (see read_part).
ROW_GROUP_ROWS = 64


def write_table(path: Path, table: pa.Table) -> None:
    """Write one Parquet file atomically in the store schema, in row groups of 64 rows."""
    table = table.replace_schema_metadata(SCHEMA.metadata)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS))


def _conform(table: pa.Table, path: Path) -> pa.Table:
    meta = table.schema.metadata or {}
    version = meta.get(_VERSION_KEY)
    if version is None:
        raise UserError(f"{path}: not a slidesparse result file (no schema version)")
    if int(version) != SCHEMA_VERSION:
        raise UserError(
            f"{path}: schema version {int(version)}, this slidesparse reads {SCHEMA_VERSION}; "
            "upgrade slidesparse (or re-import the data with the matching version)"
        )
    # Older files of the same version may lack columns added as nullable: fill them.
    for name in SCHEMA.names:
        if name not in table.schema.names:
            table = table.append_column(name, pa.nulls(len(table), SCHEMA.field(name).type))
    return table.select(SCHEMA.names).cast(SCHEMA)


def read_part_groups(path: Path) -> tuple[pa.Table, int]:
    """(readable rows, row groups lost) of one part file.

    A whole-file read first; if that fails but the footer is intact, every row group that
    still decodes is kept. Raises when nothing can be read (truncated footer, not Parquet),
    UserError for an unknown schema version.
    """
    try:
        return _conform(pq.read_table(path), path), 0
    except UserError:
        raise
    except Exception:
        try:
            pf = pq.ParquetFile(path)
        except Exception:
            pass  # no footer: nothing to salvage, the whole-file error stands
        else:
            good = []
            for i in range(pf.num_row_groups):
                try:
                    good.append(pf.read_row_group(i))
                except Exception:  # this group's bytes are damaged; the others may not be
                    continue
            if good:
                table = pa.concat_tables(good).replace_schema_metadata(pf.schema_arrow.metadata)
                return _conform(table, path), pf.num_row_groups - len(good)
        raise


def read_part(path: Path) -> pa.Table:
    """Read one part file, keeping every row group that decodes (a StoreWarning names what was
    lost); UserError for an unknown schema version, any error if nothing is readable."""
    table, lost = read_part_groups(path)
    if lost:
        warnings.warn(
            f"{path}: {lost} damaged row group(s) skipped, {table.num_rows} rows kept "
            "(slidesparse results --repair rewrites the file without them)",
            StoreWarning,
            stacklevel=2,
        )
    return table


class Store:
    """A results root holding one folder per GPU tag."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def tag_dir(self, gpu_tag: str) -> Path:
        """The folder of one GPU tag."""
        return self.root / gpu_tag

    def cache_dir(self, gpu_tag: str) -> Path:
        """Per-GPU cache folder (searched algorithms, tuned kernel configs)."""
        return self.tag_dir(gpu_tag) / "cache"

    def runs_dir(self, gpu_tag: str) -> Path:
        """Per-GPU folder of the runner's JSONL event logs."""
        return self.tag_dir(gpu_tag) / "runs"

    def gpu_tags(self) -> list[str]:
        """GPU tags that have a parts folder or a machine record."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and ((p / "parts").is_dir() or (p / "machine.json").is_file())
        )

    def write_machine(self, gpu_tag: str, record: Mapping[str, Any]) -> None:
        """Save the machine record next to the results of ``gpu_tag``."""
        text = json.dumps(dict(record), indent=2, sort_keys=True, default=str)
        atomic_write_text(self.tag_dir(gpu_tag) / "machine.json", text + "\n")

    def read_machine(self, gpu_tag: str) -> dict[str, Any] | None:
        """The machine record of ``gpu_tag``, or None if there is none."""
        path = self.tag_dir(gpu_tag) / "machine.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: corrupt machine record ({exc}); delete or fix it") from exc

    def write_rows(self, gpu_tag: str, rows: Iterable[Mapping[str, Any]], *, name: str) -> Path:
        """Write ``rows`` as one new part file ``parts/<name>.parquet``; return its path."""
        rows = [{**r, "gpu_tag": r.get("gpu_tag") or gpu_tag} for r in rows]
        path = self.tag_dir(gpu_tag) / "parts" / f"{name}.parquet"
        write_table(path, rows_to_table(rows))
        return path

    def part_files(self, gpu_tag: str | None = None) -> list[Path]:
        """Part files of one GPU tag (or all), in a stable order."""
        tags = [gpu_tag] if gpu_tag else self.gpu_tags()
        return sorted(p for tag in tags for p in (self.tag_dir(tag) / "parts").glob("*.parquet"))

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move a bad part file aside (never delete it) and warn."""
        dest_dir = path.parent.parent / "quarantine"
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / path.name
        if dest.exists():
            dest = dest_dir / f"{path.stem}.{uuid.uuid4().hex[:6]}{path.suffix}"
        shutil.move(str(path), dest)
        warnings.warn(
            f"corrupt result file {path} moved to {dest}: {reason}", StoreWarning, stacklevel=2
        )
        return dest

    def quarantine_unreadable(self, gpu_tag: str) -> list[Path]:
        """Move every part file of ``gpu_tag`` that cannot be read aside; their new paths.

        Only commands that write the store (``run-matrix``, ``results --repair``) call this:
        reading never moves or changes a file.
        """
        moved = []
        for path in self.part_files(gpu_tag):
            try:
                table, lost = read_part_groups(path)
            except UserError:
                raise
            except Exception as exc:  # pyarrow raises many types for bad files
                moved.append(self.quarantine(path, f"{type(exc).__name__}: {exc}".splitlines()[0]))
                continue
            if lost:  # keep what decodes in a fresh part, set the damaged file aside
                write_table(path.with_name(f"{path.stem}.recovered.parquet"), table)
                moved.append(self.quarantine(path, f"{lost} damaged row group(s)"))
        return moved

    def repair(self, gpu_tag: str) -> tuple[list[Path], list[Path]]:
        """Quarantine unreadable parts, then compact each run's small parts into one file.

        Returns (quarantined files, compacted run files). A killed run leaves its parts
        uncompacted; each compaction is atomic and loses no row.
        """
        moved = self.quarantine_unreadable(gpu_tag)
        runs = sorted(
            {p.stem.rsplit("-", 1)[0] for p in self.part_files(gpu_tag) if p.stem.count("-") > 1}
        )
        compacted = [p for run in runs if (p := self.compact_run(gpu_tag, run)) is not None]
        return moved, compacted

    def read_table(self, gpu_tag: str | None = None) -> pa.Table:
        """All rows of one GPU tag (or all tags) as one Arrow table, duplicates by row_id dropped.

        Reading never moves or changes a file: a part that cannot be read is skipped with a
        :class:`StoreWarning` naming it (writers set it aside with :meth:`quarantine_unreadable`);
        a file of another schema version is a UserError.
        """
        tables = []
        for path in self.part_files(gpu_tag):
            try:
                tables.append(read_part(path))
            except UserError:
                raise
            except Exception as exc:  # pyarrow raises many types for bad files
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
                warnings.warn(f"skipped unreadable {path}: {reason}", StoreWarning, stacklevel=2)
        if not tables:
            return SCHEMA.empty_table()
        table = pa.concat_tables(tables)
        return _drop_duplicate_rows(table)

    def read(self, gpu_tag: str | None = None) -> pd.DataFrame:
        """All rows as a DataFrame (nullable dtypes), duplicates by row_id dropped."""
        return to_frame(self.read_table(gpu_tag))

    def compact_run(self, gpu_tag: str, run_id: str) -> Path | None:
        """Merge the part files of one run into ``parts/<run_id>.parquet`` atomically.

        The merged file is renamed into place before the small parts are removed, so a kill in
        between leaves duplicates (dropped by ``row_id`` on read), never a loss.
        """
        parts_dir = self.tag_dir(gpu_tag) / "parts"
        parts = sorted(parts_dir.glob(f"{run_id}-*.parquet"))
        target = parts_dir / f"{run_id}.parquet"
        if not parts:
            return None
        tables = []
        if target.exists():
            parts.insert(0, target)
        for path in parts:
            try:
                tables.append(read_part(path))
            except UserError:
                raise
            except Exception as exc:  # leave a bad part where read_table will quarantine it
                warnings.warn(
                    f"not compacting unreadable {path}: {exc}", StoreWarning, stacklevel=2
                )
                return None
        write_table(target, _drop_duplicate_rows(pa.concat_tables(tables)))
        for path in parts:
            if path != target:
                path.unlink()
        return target


def _drop_duplicate_rows(table: pa.Table) -> pa.Table:
    row_ids = table.column("row_id").to_pylist()
    seen: set[str] = set()
    keep = []
    for i, rid in enumerate(row_ids):
        if rid not in seen:
            seen.add(rid)
            keep.append(i)
    return table if len(keep) == len(row_ids) else table.take(keep)


def to_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table in the store schema as a pandas frame with nullable dtypes."""
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def latest_per_cell(frame: pd.DataFrame) -> pd.DataFrame:
    """The latest row of each cell_id (by started_at), e.g. to decide what a resume skips."""
    if frame.empty:
        return frame
    ordered = frame.sort_values(["cell_id", "started_at"], kind="stable")
    return ordered.groupby("cell_id", sort=False).tail(1).reset_index(drop=True)


# --- added for the runner ------------------------------------------------------------------


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Counts of the latest row per cell by GPU tag, task and status (for ``results``)."""
    if frame.empty:
        return pd.DataFrame(columns=["gpu_tag", "task", "status", "cells"])
    latest = latest_per_cell(frame)
    keys = [latest[c].astype(str) for c in ("gpu_tag", "task", "status")]
    out = latest.groupby(keys).size().rename("cells").reset_index()
    out.columns = ["gpu_tag", "task", "status", "cells"]
    return out
