"""Merge result stores (e.g. from several GPUs, or old and new runs of one GPU) into one.

Rules:

* The union is keyed by GPU tag: every tag of every input lands in the output's tag folder.
* Rows are identified by ``row_id``; the same row met twice (same file merged twice, or an
  output merged again with one of its inputs) is kept once. Merging is idempotent and
  independent of the input order: each tag's rows are written as one part file, sorted.
* Rows of the same cell from different runs are all kept as history; readers resolve them
  with :func:`slidesparse.report.tables.resolve_cells` (the latest ok row wins, else the latest).
* Inputs are never modified. A part file of another schema version stops the merge with a
  UserError naming the file; a corrupt part file or machine record is skipped with a
  :class:`slidesparse.results.store.StoreWarning`.
"""

from __future__ import annotations

import shutil
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from slidesparse.core.errors import UserError
from slidesparse.results.store import KEY_COLUMNS, Store, StoreWarning, read_part, write_table

MERGED_PART = "merged"


@dataclass
class MergeSummary:
    """What a merge read and wrote, per GPU tag."""

    rows_in: dict[str, int] = field(default_factory=dict)
    rows_out: dict[str, int] = field(default_factory=dict)
    cells_with_history: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def merge_stores(inputs: list[Path | str], out: Path | str) -> MergeSummary:
    """Merge the stores ``inputs`` into the store at ``out`` (created if needed).

    Rows already in ``out`` are kept (they count as one more input). Returns a summary.
    """
    out_store = Store(out)
    stores = [Store(p) for p in inputs]
    for s in stores:
        if s.root.resolve() == out_store.root.resolve():
            raise UserError(
                f"merge -o {out} is also an input, which the merge would rewrite; "
                "write the merge to another folder"
            )
    for s in stores:
        if not s.root.is_dir():
            raise UserError(f"{s.root}: no such results folder; pass folders made by slidesparse")
        if not s.gpu_tags():
            raise UserError(
                f"{s.root}: holds no GPU tag folders; is it a slidesparse results root?"
            )
    if out_store.root.is_dir():
        stores.append(out_store)
    summary = MergeSummary()
    tags = sorted({t for s in stores for t in s.gpu_tags()})
    for tag in tags:
        tables, machines, runs, read = [], [], [], []
        for s in stores:
            if tag not in s.gpu_tags():
                continue
            for path in s.part_files(tag):
                try:
                    table = read_part(path)  # UserError (schema version) propagates
                except UserError:
                    raise
                except Exception as exc:  # pyarrow raises many types for a bad file
                    msg = f"skipped unreadable {path}: {type(exc).__name__}: {exc}".splitlines()[0]
                    summary.warnings.append(msg)
                    warnings.warn(msg, StoreWarning, stacklevel=2)
                    continue
                read.append(path)
                if table.num_rows:
                    tables.append(table)
            machines.append(_machine(s, tag, summary))
            runs += sorted(s.runs_dir(tag).glob("*.jsonl")) if s.runs_dir(tag).is_dir() else []
        merged = _union(tables)
        summary.rows_in[tag] = sum(t.num_rows for t in tables)
        summary.rows_out[tag] = merged.num_rows
        summary.cells_with_history[tag] = _cells_with_history(merged)
        _write_tag(out_store, tag, merged, machines, runs, read)
    return summary


def _machine(store: Store, tag: str, summary: MergeSummary) -> dict | None:
    try:
        return store.read_machine(tag)
    except UserError as exc:
        summary.warnings.append(str(exc))
        warnings.warn(f"skipped machine record: {exc}", StoreWarning, stacklevel=3)
        return None


def _union(tables: list[pa.Table]) -> pa.Table:
    from slidesparse.results.store import SCHEMA

    if not tables:
        return SCHEMA.empty_table()
    table = pa.concat_tables(tables)
    order = sorted(range(table.num_rows), key=table.column("row_id").to_pylist().__getitem__)
    ids = table.column("row_id").to_pylist()
    keep, seen = [], set()
    for i in order:
        if ids[i] not in seen:
            seen.add(ids[i])
            keep.append(i)
    return table.take(keep)


def _cells_with_history(table: pa.Table) -> int:
    if not table.num_rows:
        return 0
    columns = [table.column(c).to_pylist() for c in KEY_COLUMNS]
    counts = Counter(zip(*columns, strict=True))
    return sum(1 for n in counts.values() if n > 1)


def _pick_machine(machines: list[dict | None]) -> dict | None:
    # A record measured on the machine beats one synthesized from a legacy folder name.
    found = [m for m in machines if m]
    measured = [m for m in found if m.get("source") != "legacy"]
    return (measured or found or [None])[0]


def _write_tag(out: Store, tag: str, table, machines, runs: list[Path], read: list[Path]) -> None:
    target = out.tag_dir(tag) / "parts" / f"{MERGED_PART}.parquet"
    write_table(target, table)
    # Parts the output held before were read as an input: their rows are now in the merged
    # file. Unreadable ones stay where they are.
    for p in out.part_files(tag):
        if p != target and p in read:
            p.unlink()
    machine = _pick_machine(machines)
    if machine is not None:
        out.write_machine(tag, machine)
    dest = out.runs_dir(tag)
    for log in runs:
        if log.parent != dest and not (dest / log.name).exists():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(log, dest / log.name)
