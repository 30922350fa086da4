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
