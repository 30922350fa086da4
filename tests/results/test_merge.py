"""Merging stores: union per GPU tag, idempotent, order-independent, safe with bad inputs."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from synthetic_rows import TAG, TAG2, synthetic_rows

from slidesparse.core.errors import UserError
from slidesparse.results.merge import merge_stores
from slidesparse.results.store import Store, StoreWarning


def _store(root: Path, tag: str, rows: list[dict], name: str = "part-a") -> Store:
    s = Store(root)
    s.write_rows(tag, rows, name=name)
    s.write_machine(tag, {"gpu_name": tag.split("_")[0], "gpu_tag": tag})
    return s


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _rows(root: Path) -> list[tuple]:
    frame = Store(root).read()
    return sorted(
        zip(frame["row_id"], frame["gpu_tag"], frame["latency_us"].astype(str), strict=True)
    )


@pytest.fixture
def two_stores(tmp_path):
    a = _store(tmp_path / "a", TAG, synthetic_rows(TAG))
    rows_b = synthetic_rows(TAG2, scale=0.5)
    b = _store(tmp_path / "b", TAG2, rows_b)
    # b also re-measured one H100 cell in another run: same cell, new row
    again = {**synthetic_rows(TAG)[0], "row_id": "rerun-1", "run_id": "run-2", "latency_us": 77.0}
    b.write_rows(TAG, [again], name="part-b")
    return a.root, b.root


def test_union_keeps_history_and_dedupes(two_stores, tmp_path):
    a, b = two_stores
    summary = merge_stores([a, b], tmp_path / "out")
    n_a, n_b = len(synthetic_rows(TAG)), len(synthetic_rows(TAG2))
    assert summary.rows_out == {TAG: n_a + 1, TAG2: n_b}
    assert summary.cells_with_history[TAG] == 1
    assert Store(tmp_path / "out").read_machine(TAG2)["gpu_tag"] == TAG2


def test_merge_is_idempotent_and_order_independent(two_stores, tmp_path):
    a, b = two_stores
    merge_stores([a, b], tmp_path / "ab")
    merge_stores([b, a], tmp_path / "ba")
    assert _rows(tmp_path / "ab") == _rows(tmp_path / "ba")
    assert _snapshot(tmp_path / "ab") == _snapshot(tmp_path / "ba")
    before = _snapshot(tmp_path / "ab")
    merge_stores([a, b], tmp_path / "ab")  # again, into the same output
    assert _snapshot(tmp_path / "ab") == before
    # Naming the output as an input too is refused: the merge would rewrite an input.
    with pytest.raises(UserError, match="is also an input"):
        merge_stores([tmp_path / "ab", a], tmp_path / "ab")
    assert _snapshot(tmp_path / "ab") == before


def test_inputs_are_never_modified(two_stores, tmp_path):
    a, b = two_stores
    before = (_snapshot(a), _snapshot(b))
    merge_stores([a, b], tmp_path / "out")
    assert (_snapshot(a), _snapshot(b)) == before


def test_schema_version_mismatch_is_refused(two_stores, tmp_path):
    a, b = two_stores
    part = next((Path(b) / TAG2 / "parts").glob("*.parquet"))
    table = pq.read_table(part)
    pq.write_table(table.replace_schema_metadata({b"slidesparse.schema_version": b"99"}), part)
    with pytest.raises(UserError, match="schema version 99"):
        merge_stores([a, b], tmp_path / "out")
    assert not (tmp_path / "out" / TAG2).exists()


def test_corrupt_file_is_skipped_with_a_warning(two_stores, tmp_path):
    a, b = two_stores
    bad = Path(a) / TAG / "parts" / "zz-corrupt.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.warns(StoreWarning, match="zz-corrupt"):
        summary = merge_stores([a, b], tmp_path / "out")
    assert summary.rows_out[TAG] == len(synthetic_rows(TAG)) + 1
    assert bad.exists()  # left where it was


def test_bad_input_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such results folder"):
        merge_stores([tmp_path / "missing"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no GPU tag folders"):
        merge_stores([tmp_path / "empty"], tmp_path / "out")


def test_merge_cli(two_stores, tmp_path, capsys):
    from slidesparse.cli import main

    a, b = two_stores
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["merge", str(a), str(b), "-o", str(tmp_path / "out")]) == 0
    assert f"{TAG}: " in capsys.readouterr().out
    assert main(["merge", str(tmp_path / "nope"), "-o", str(tmp_path / "o2")]) == 2
    assert pa is not None
