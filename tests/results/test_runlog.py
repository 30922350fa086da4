"""Run time accounting from the runner's event log: a real smoke run's, and edge cases."""

from __future__ import annotations

import json

import pytest

from slidesparse.results.runlog import run_stats


def _log(path, events):
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def test_share_counts_ran_cells_over_every_worker_slot(tmp_path):
    log = _log(
        tmp_path / "r1.jsonl",
        [
            {"event": "run_start", "predicted_s": 40.0, "unestimated": 1},
            {"event": "worker_start", "slot": 0},
            {"event": "worker_start", "slot": 1},
            {"event": "worker_start", "slot": 0},  # a replaced worker: same slot
            {"event": "cell_end", "status": "ok", "duration_s": 30.0},
            {"event": "cell_end", "status": "failed", "duration_s": 10.0},
            {"event": "cell_end", "status": "skipped", "duration_s": 0.0},
            {"event": "run_end", "duration_s": 50.0},
        ],
    )
    s = run_stats(log)
    assert (s.run_id, s.cells, s.slots, s.in_cells_s, s.wall_s) == ("r1", 2, 2, 40.0, 50.0)
    assert s.share == pytest.approx(0.4)
    assert s.describe() == (
        "r1: 2 cells on 2 workers, 50 s wall, 40% of it inside cells; plan predicted 40 s "
        "(1 cells unestimated), actual / predicted 1.25"
    )


def test_a_killed_run_has_no_share_and_a_torn_line_is_skipped(tmp_path):
    log = tmp_path / "r2.jsonl"
    log.write_text(
        json.dumps({"event": "cell_end", "status": "ok", "duration_s": 2.0}) + '\n{"event": "ce',
        encoding="utf-8",
    )
    s = run_stats(log)
    assert s.cells == 1 and s.wall_s is None and s.share is None
    assert "killed before its end" in s.describe()


def test_results_prints_the_share_of_a_real_run(smoke_store, capsys):
    from slidesparse.cli import main

    assert main(["results", str(smoke_store)]) == 0
    out = capsys.readouterr().out
    runs = [ln for ln in out.splitlines() if ln.strip().startswith("run ")]
    assert runs and all("inside cells" in ln and "plan predicted" in ln for ln in runs), out


def test_time_outside_cells_is_put_on_each_slots_timeline(tmp_path):
    def at(s):  # seconds after the start, as the runner writes them
        return f"2026-01-01T00:00:{s:06.3f}+00:00"

    log = _log(
        tmp_path / "r3.jsonl",
        [
            {"t": at(0), "event": "run_start"},
            {"t": at(1), "event": "worker_start", "slot": 0},
            {"t": at(4), "event": "worker_ready", "slot": 0},
            {"t": at(5), "event": "cell_start", "slot": 0, "cell_id": "a"},
            {"t": at(15), "event": "cell_end", "cell_id": "a", "task": "kernel-gemm",
             "status": "ok", "duration_s": 9.5},
            {"t": at(17), "event": "cell_start", "slot": 0, "cell_id": "b"},
            {"t": at(27), "event": "cell_end", "cell_id": "b", "task": "kernel-quant",
             "status": "ok", "duration_s": 10.0},
            {"t": at(30), "event": "run_end", "duration_s": 30.0},
        ],
    )  # fmt: skip
    s = run_stats(log)
    o = s.outside
    assert (o.worker_start, o.starts, o.between, o.round_trip) == (3.0, 1, 3.0, 0.5)
    assert o.head_tail == 4.0  # 1 s before the first worker, 3 s after the last cell
    assert s.in_cells_s + o.worker_start + o.between + o.round_trip + o.head_tail == 30.0
    assert s.per_task == {"kernel-gemm": (1, 9.5), "kernel-quant": (1, 10.0)}
    # Each task is charged its cells' time plus its share (by cells) of the 10.5 s outside.
    assert s.cells_per_minute() == pytest.approx({"kernel-gemm": 60 / 14.75,
                                                  "kernel-quant": 60 / 15.25})  # fmt: skip
    lines = s.details()
    assert lines[0] == ("outside cells: worker start 3.0 s (1 start), between cells 3.0 s, "
                        "cell round trips 0.5 s, run start/end 4.0 s")  # fmt: skip
    assert lines[1].startswith("cells per minute: kernel-gemm 4.1 (1 cells)")


def test_a_cell_sent_before_the_last_one_was_recorded_leaves_no_idle_gap(tmp_path):
    log = _log(
        tmp_path / "r4.jsonl",
        [
            {"t": "2026-01-01T00:00:01+00:00", "event": "cell_start", "slot": 0, "cell_id": "a"},
            {"t": "2026-01-01T00:00:05+00:00", "event": "cell_start", "slot": 0, "cell_id": "b"},
            {"t": "2026-01-01T00:00:05+00:00", "event": "cell_end", "cell_id": "a",
             "status": "ok", "duration_s": 4.0},
            {"t": "2026-01-01T00:00:09+00:00", "event": "cell_end", "cell_id": "b",
             "status": "ok", "duration_s": 4.0},
            {"t": "2026-01-01T00:00:10+00:00", "event": "cell_start", "slot": 0, "cell_id": "c"},
        ],
    )  # fmt: skip
    assert run_stats(log).outside.between == 1.0  # only the gap before c
