"""The results store: round trips, atomic part files, quarantine, compaction, summaries."""

from __future__ import annotations

import json
import math
import warnings
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from slidesparse.core.errors import UserError
from slidesparse.results.store import (
    COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    Store,
    StoreWarning,
    latest_per_cell,
    normalize_row,
    read_part,
    rows_to_table,
    summarize,
)

TAG = "H100_cc90_py312_cu129_x86_64"


def _full_row(i: int) -> dict:
    """A row with a value in every column, of every column type."""
    return {
        "row_id": f"row-{i}",
        "run_id": "20260101T000000Z-abcdef",
        "cell_id": f"cell{i:012d}",
        "gpu_tag": TAG,
        "source": "run",
        "task": "kernel-gemm",
        "model": "Qwen2.5-7B",
        "layer": "gate_up",
        "mode": "model",
        "dtype": "int8",
        "out_dtype": "int32",
        "backend": "cusparselt",
        "kernel": "cusparseLtMatmul",
        "sparsity": "2_8",
        "M": 16384 + i,
        "N": 37888,
        "K": 3584,
        "K_slide": 5376,
        "status": "ok",
        "error_class": None if i % 2 else "timeout",
        "error_message": "ünïcödé message ✓" if i % 2 else None,
        "started_at": datetime(2026, 1, 1, 12, i // 60, i % 60, 123456, tzinfo=UTC),
        "duration_s": 1.25 + i,
        "latency_us": 123.456,
        "latency_p25_us": 120.0,
        "latency_p75_us": 130.0,
        "latency_min_us": 119.5,
        "n_samples": 50,
        "latency_spread": 0.004,
        "spread_met": bool(i % 2),
        "tops": 1234.5,
        "gbps": math.inf if i == 2 else 3000.0,
        "tokens_per_s": None,
        "requests_per_s": 12.5,
        "elapsed_s": 10.0,
        "prompt_len": 1024,
        "output_len": 1,
        "max_num_seqs": 16,
        "num_prompts": 2048,
        "alg_id": 3,
        "split_k": -1,
        "workspace_bytes": 2**40,
        "timer": "cuda_event",
        "baseline_suspect": bool(i % 2),
        "correct": True,
        "max_abs_err": 0.0,
        "versions": {"torch": "2.11.0", "cusparselt": "0.8.0"},
        "extra": {"params": {"M": 16384 + i}, "nested": [1, 2.5, "x", None]},
    }


def test_every_column_round_trips(tmp_path):
    store = Store(tmp_path)
    rows = [_full_row(i) for i in range(4)]
    store.write_rows(TAG, rows, name="part-a")
    table = store.read_table(TAG)
    assert table.schema.equals(SCHEMA, check_metadata=False)
    back = table.to_pylist()
    assert len(back) == len(rows)
    for want, got in zip(rows, back, strict=True):
        for col in COLUMNS:
            if col == "schema_version":
                assert got[col] == SCHEMA_VERSION
            elif col in ("versions", "extra"):
                assert json.loads(got[col]) == want[col], col
            else:
                assert got[col] == want[col], col
    # The same rows through pandas keep nulls as nulls and types as Arrow types.
    frame = store.read(TAG)
    assert frame["tokens_per_s"].isna().all()
    assert frame["M"].tolist() == [16384, 16385, 16386, 16387]
    assert str(frame["started_at"].dtype).startswith("timestamp[us, tz=UTC]")


def test_rewriting_a_read_table_is_identical(tmp_path):
    store = Store(tmp_path)
    store.write_rows(TAG, [_full_row(i) for i in range(3)], name="a")
    first = store.read_table(TAG)
    copy = Store(tmp_path / "copy")
    copy.write_rows(TAG, first.to_pylist(), name="b")
    assert copy.read_table(TAG).equals(first)


def test_a_part_written_before_the_spread_columns_reads_them_as_null(tmp_path):
    store = Store(tmp_path)
    path = store.write_rows(TAG, [_full_row(0)], name="old")
    old = pq.read_table(path).drop_columns(["latency_spread", "spread_met"])
    pq.write_table(old.replace_schema_metadata(SCHEMA.metadata), path)
    (row,) = store.read_table(TAG).to_pylist()
    assert row["latency_spread"] is None and row["spread_met"] is None
    assert row["latency_us"] == 123.456


def test_normalize_row_rejects_unknown_columns_and_bad_status():
    with pytest.raises(ValueError, match="unknown result columns"):
        normalize_row({"status": "ok", "latency": 1.0})
    with pytest.raises(ValueError, match="status must be one of"):
        normalize_row({"status": "done"})
    with pytest.raises(ValueError, match="error_class"):
        normalize_row({"status": "failed", "error_class": "kaboom"})


def test_corrupt_part_is_quarantined_not_dropped_silently(tmp_path):
    store = Store(tmp_path)
    store.write_rows(TAG, [_full_row(0)], name="good")
    bad = store.tag_dir(TAG) / "parts" / "bad.parquet"
    good_bytes = (store.tag_dir(TAG) / "parts" / "good.parquet").read_bytes()
    bad.write_bytes(good_bytes[: len(good_bytes) // 2])  # a truncated file
    # Reading names the file and keeps every readable row, but never moves anything.
    with pytest.warns(StoreWarning, match="skipped unreadable .*bad.parquet"):
        frame = store.read(TAG)
    assert len(frame) == 1 and bad.exists()
    # Only a writer (run-matrix, results --repair) sets it aside, with a warning.
    with pytest.warns(StoreWarning, match="corrupt result file"):
        moved = store.quarantine_unreadable(TAG)
    assert len(store.read(TAG)) == 1
    assert not bad.exists()
    assert moved == [store.tag_dir(TAG) / "quarantine" / "bad.parquet"] and moved[0].exists()


def test_repair_compacts_the_parts_of_a_killed_run(tmp_path):
    store = Store(tmp_path)
    for i in range(3):  # three flushes of one run, never compacted (the runner was killed)
        store.write_rows(TAG, [_full_row(i)], name=f"20260101T000000Z-abcdef-{i:05d}")
    moved, compacted = store.repair(TAG)
    assert moved == [] and [p.name for p in compacted] == ["20260101T000000Z-abcdef.parquet"]
    assert [p.name for p in store.part_files(TAG)] == ["20260101T000000Z-abcdef.parquet"]
    assert len(store.read(TAG)) == 3


def test_unknown_schema_version_is_refused(tmp_path):
    path = tmp_path / "future.parquet"
    table = rows_to_table([_full_row(0)]).replace_schema_metadata(
        {b"slidesparse.schema_version": b"99"}
    )
    pq.write_table(table, path)
    with pytest.raises(UserError, match="schema version 99"):
        read_part(path)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(UserError, match="not a slidesparse result file"):
        read_part(tmp_path / "foreign.parquet")


def test_compact_run_merges_parts_and_keeps_every_row(tmp_path):
    store = Store(tmp_path)
    run = "20260101T000000Z-abcdef"
    for seq in range(3):
        rows = [_full_row(seq * 10 + j) for j in range(2)]
        store.write_rows(TAG, rows, name=f"{run}-{seq:05d}")
    other = store.write_rows(TAG, [_full_row(99)], name="other-run")
    before = store.read_table(TAG)
    target = store.compact_run(TAG, run)
    assert target.name == f"{run}.parquet"
    assert sorted(p.name for p in store.part_files(TAG)) == sorted([target.name, other.name])
    after = store.read_table(TAG)
    assert sorted(after.column("row_id").to_pylist()) == sorted(before.column("row_id").to_pylist())


def test_duplicate_parts_are_harmless(tmp_path):
    store = Store(tmp_path)
    rows = [_full_row(i) for i in range(2)]
    store.write_rows(TAG, rows, name="a")
    store.write_rows(TAG, rows, name="a-copy")  # e.g. a kill between compaction steps
    assert len(store.read(TAG)) == 2


def test_latest_per_cell_and_summary():
    older = {**_full_row(1), "status": "failed", "error_class": "oom", "row_id": "x1"}
    newer = {**_full_row(1), "status": "ok", "row_id": "x2"}
    newer["started_at"] = datetime(2026, 1, 2, tzinfo=UTC)
    frame = rows_to_table([newer, older, _full_row(2)]).to_pandas()
    latest = latest_per_cell(frame)
    assert len(latest) == 2
    assert set(latest["row_id"]) == {"x2", "row-2"}
    table = summarize(frame)
    assert table.to_dict("records") == [
        {"gpu_tag": TAG, "task": "kernel-gemm", "status": "ok", "cells": 2}
    ]


def test_no_temporary_files_are_left_behind(tmp_path):
    store = Store(tmp_path)
    store.write_rows(TAG, [_full_row(0)], name="a")
    store.write_machine(TAG, {"gpu_name": "NVIDIA H100"})
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert store.read_machine(TAG) == {"gpu_name": "NVIDIA H100"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.gpu_tags() == [TAG]


def test_a_damaged_region_costs_its_row_groups_not_the_file(tmp_path):
    import pyarrow.parquet as pq

    from slidesparse.results.store import ROW_GROUP_ROWS

    store = Store(tmp_path)
    n = 3 * ROW_GROUP_ROWS
    store.write_rows(TAG, [_full_row(i) for i in range(n)], name="run")
    path = store.tag_dir(TAG) / "parts" / "run.parquet"
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 3
    data = bytearray(path.read_bytes())
    start = (
        meta.row_group(1).column(0).file_offset - meta.row_group(1).column(0).total_compressed_size
    )
    start = min(meta.row_group(1).column(c).data_page_offset for c in range(meta.num_columns))
    data[start : start + 200] = b"\xff" * 200  # 200 bad bytes inside the second group
    path.write_bytes(bytes(data))
    with pytest.warns(StoreWarning, match="1 damaged row group"):
        frame = store.read(TAG)
    assert len(frame) == n - ROW_GROUP_ROWS  # the other two groups' rows survive
    # Repair keeps those rows in a fresh part and sets the damaged file aside.
    with pytest.warns(StoreWarning, match="corrupt result file"):
        (moved,) = store.quarantine_unreadable(TAG)
    assert moved.parent.name == "quarantine" and not path.exists()
    assert len(store.read(TAG)) == n - ROW_GROUP_ROWS
