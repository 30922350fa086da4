"""The runner end to end on CPU with the noop task: faults, timeouts, resume after kill -9."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from slidesparse.core.errors import UserError
from slidesparse.results.store import Store, StoreWarning, latest_per_cell
from slidesparse.run.runner import RunOptions, detect, make_plan, run_plan

REPO = Path(__file__).resolve().parents[2]
TAG = "CPU_test_py311_cpu_x86_64"


def _machine(tmp_path: Path) -> Path:
    path = tmp_path / "machine.json"
    path.write_text(json.dumps({"gpu_tag": TAG, "cc": None, "memory_bytes": None}))
    return path


def _matrix(tmp_path: Path, text: str) -> str:
    path = tmp_path / "matrix.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def _run(tmp_path: Path, matrix: str, **kw):
    options = RunOptions(
        results=tmp_path / "results",
        machine_file=_machine(tmp_path),
        progress="none",
        **kw,
    )
    plan = make_plan(matrix, options)
    return plan, run_plan(plan, options)


def _latest(tmp_path: Path):
    frame = Store(tmp_path / "results").read(TAG)
    return frame, latest_per_cell(frame)


FAULTS = {
    "raise": "error",
    "abort": "crash",
    "segfault": "crash",
    "exit": "crash",
    "hang": "timeout",
    "oom": "oom",
    "cuda_illegal_instruction": "cuda_illegal_instruction",
    "cuda_illegal_address": "cuda_illegal_address",
    "stderr_illegal_address": "cuda_illegal_address",
}


def test_every_fault_is_classified_and_the_rest_completes(tmp_path):
    matrix = _matrix(
        tmp_path,
        f"""
        blocks:
          - task: noop
            axes: {{count: 12}}
          - task: noop
            timeout_s: 1.5
            axes: {{action: [{", ".join(FAULTS)}, unsupported], index: [100]}}
          - task: noop
            axes: {{index: [200, 201, 202]}}
        """,
    )
    _, summary = _run(tmp_path, matrix)
    assert summary.exit_code == 1
    assert summary.counts == {"ok": 15, "failed": len(FAULTS), "skipped": 1}
    _, latest = _latest(tmp_path)
    assert len(latest) == 15 + len(FAULTS) + 1
    by_action = {
        json.loads(extra)["params"]["action"]: row
        for extra, (_, row) in zip(latest["extra"], latest.iterrows(), strict=True)
    }
    for action, error_class in FAULTS.items():
        row = by_action[action]
        assert row["status"] == "failed", action
        assert row["error_class"] == error_class, (action, row["error_message"])
        assert row["error_message"], action
    assert by_action["unsupported"]["status"] == "skipped"
    assert by_action["unsupported"]["error_message"] == "injected: this cell cannot run here"
    assert "SIGSEGV" in by_action["segfault"]["error_message"]
    assert "illegal memory access" in by_action["stderr_illegal_address"]["error_message"]
    assert (latest["status"] == "ok").sum() == 15
    # The event log records the worker replacements.
    events = [json.loads(ln) for ln in summary.event_log.read_text().splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "run_start" and names[-1] == "run_end"
    assert names.count("worker_start") >= 1 + 7  # abort, segfault, exit, hang, 3 sticky
    assert names.count("cell_end") == len(latest)


def test_resume_skips_ok_and_retry_failed_reruns_failures(tmp_path):
    matrix = _matrix(
        tmp_path,
        """
        blocks:
          - task: noop
            axes: {count: 5}
          - task: noop
            axes: {action: [raise], index: [9]}
        """,
    )
    _, first = _run(tmp_path, matrix)
    assert first.counts == {"ok": 5, "failed": 1}
    plan, second = _run(tmp_path, matrix)
    assert sum(second.counts.values()) == 0
    assert second.kept_failed == 1 and second.exit_code == 1
    assert plan.counts()["noop"] == {"done": 5, "failed": 1}
    _, third = _run(tmp_path, matrix, retry_failed=True)
    assert third.counts == {"failed": 1}
    frame, latest = _latest(tmp_path)
    assert len(frame) == 7 and len(latest) == 6


def test_each_cell_runs_with_its_target_spread_and_the_run_option_overrides_it(tmp_path):
    matrix = _matrix(
        tmp_path,
        """
        blocks:
          - task: noop
            axes: {index: [0]}
          - task: noop
            target_spread: 0.2
            axes: {index: [1]}
        """,
    )

    def targets() -> dict:
        _, latest = _latest(tmp_path)
        extras = [json.loads(e) for e in latest["extra"]]
        return {e["index"]: e["target_spread"] for e in extras}

    _run(tmp_path, matrix)
    assert targets() == {0: 0.01, 1: 0.2}
    _run(tmp_path, matrix, rerun_all=True, target_spread=0.03)
    assert targets() == {0: 0.03, 1: 0.03}


def test_two_workers_share_the_cells(tmp_path):
    matrix = _matrix(
        tmp_path,
        """
        blocks:
          - task: noop
            axes: {action: [sleep], sleep_s: [0.1], count: 16}
        """,
    )
    _, summary = _run(tmp_path, matrix, workers=2)
    assert summary.counts == {"ok": 16}
    events = [json.loads(ln) for ln in summary.event_log.read_text().splitlines()]
    slots = {e["slot"] for e in events if e["event"] == "cell_start"}
    assert slots == {0, 1}


def test_rows_flush_into_compacted_part(tmp_path):
    matrix = _matrix(tmp_path, "blocks: [{task: noop, axes: {count: 30}}]")
    _, summary = _run(tmp_path, matrix, flush_rows=7, flush_interval_s=60)
    store = Store(tmp_path / "results")
    parts = store.part_files(TAG)
    assert [p.name for p in parts] == [f"{summary.run_id}.parquet"]
    frame = store.read(TAG)
    assert len(frame) == 30 and frame["row_id"].is_unique
    assert set(frame["gpu_tag"]) == {TAG} and set(frame["run_id"]) == {summary.run_id}
    assert json.loads(frame["versions"].iloc[0])["slidesparse"]
    assert store.read_machine(TAG)["gpu_tag"] == TAG


_RUNNER = """
import sys
from slidesparse.run.runner import RunOptions, make_plan, run_plan
options = RunOptions(results=sys.argv[2], machine_file=sys.argv[3], progress="none",
                     flush_interval_s=0.2, flush_rows=5)
summary = run_plan(make_plan(sys.argv[1], options), options)
sys.exit(summary.exit_code)
"""


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_runs_every_cell_exactly_once(tmp_path):
    n_cells = 150
    matrix = _matrix(
        tmp_path,
        f"""
        blocks:
          - task: noop
            axes: {{action: [sleep], sleep_s: [0.03], count: {n_cells}}}
        """,
    )
    results, machine = tmp_path / "results", _machine(tmp_path)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    rng = random.Random(1234)
    stored_before: list[str] = []
    killed_mid_run = 0
    for _ in range(10):
        proc = subprocess.Popen(
            [sys.executable, "-c", _RUNNER, matrix, str(results), str(machine)], env=env
        )
        time.sleep(rng.uniform(0.3, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        with warnings.catch_warnings():
            warnings.simplefilter("error", StoreWarning)  # a corrupt part would warn
            frame = Store(results).read(TAG)
        # Nothing stored is ever lost, and no cell is stored twice.
        assert frame["cell_id"].is_unique
        assert set(stored_before) <= set(frame["cell_id"])
        stored_before = list(frame["cell_id"])
        killed_mid_run += proc.returncode == -signal.SIGKILL and len(frame) < n_cells
    assert killed_mid_run >= 5  # the trials really interrupted work in progress
    final = subprocess.run(
        [sys.executable, "-c", _RUNNER, matrix, str(results), str(machine)], env=env
    )
    assert final.returncode == 0
    store = Store(results)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        frame = store.read(TAG)
    assert len(frame) == n_cells
    assert frame["cell_id"].is_unique
    assert set(frame["status"]) == {"ok"}
    assert not (store.tag_dir(TAG) / "quarantine").exists()
    # Workers die with their runner: no orphan is left running the noop task.
    out = subprocess.run(["pgrep", "-f", "slidesparse.run.worker"], capture_output=True, text=True)
    own = [pid for pid in out.stdout.split() if _is_our_worker(pid, results)]
    assert own == []


def _is_our_worker(pid: str, results: Path) -> bool:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return str(results).encode() in env


def test_detect_reads_a_saved_machine_record(tmp_path):
    machine = detect(_machine(tmp_path))
    assert machine.gpu_tag == TAG and not machine.has_gpu
    assert machine.versions()["slidesparse"]


def test_sigterm_stops_cleanly_keeping_finished_cells(tmp_path):
    matrix = _matrix(
        tmp_path,
        """
        blocks:
          - task: noop
            axes: {action: [sleep], sleep_s: [0.05], count: 200}
        """,
    )
    results, machine = tmp_path / "results", _machine(tmp_path)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, matrix, str(results), str(machine)], env=env
    )
    deadline = time.monotonic() + 60
    while not list((results / TAG / "parts").glob("*.parquet")):  # some cells are stored
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    frame = Store(results).read(TAG)
    assert 0 < len(frame) < 200 and frame["cell_id"].is_unique
    log = next(Store(results).runs_dir(TAG).glob("*.jsonl"))
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["event"] == "run_end" and last["interrupted"] == signal.SIGTERM
    assert last["counts"]["ok"] == len(frame)  # everything finished was flushed


def test_rich_progress_renders_without_a_terminal():
    import io

    from slidesparse.run.progress import make_progress

    stream = io.StringIO()
    progress = make_progress("rich", stream)
    progress.start(2)
    progress.advance("noop(index=0)", "ok", 0.1)
    progress.advance("noop(index=1)", "failed", 0.2, "crash: worker killed by SIGSEGV")
    progress.close()
    text = stream.getvalue()
    assert "failed" in text and "SIGSEGV" in text and "2/2" in text
    plain = io.StringIO()
    progress = make_progress("auto", plain)  # not a TTY: plain lines
    progress.start(1)
    progress.advance("noop(index=0)", "ok", 0.1)
    assert plain.getvalue().startswith("[1/1] ok ")


def test_timeout_kills_what_the_cell_started(tmp_path):
    matrix = _matrix(
        tmp_path,
        """
        blocks:
          - task: noop
            timeout_s: 1.0
            axes: {action: [spawn_hang]}
        """,
    )
    _, summary = _run(tmp_path, matrix)
    assert summary.counts == {"failed": 1}
    _, latest = _latest(tmp_path)
    message = latest["error_message"].iloc[0]
    assert latest["error_class"].iloc[0] == "timeout"
    pid = int(message.split("spawned pid ")[1].split()[0])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.slow
def test_a_second_runner_on_the_same_cells_is_refused(tmp_path):
    matrix = _matrix(
        tmp_path,
        """
        blocks:
          - task: noop
            axes: {action: [sleep], sleep_s: [0.05], count: 100}
        """,
    )
    results, machine = tmp_path / "results", _machine(tmp_path)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, matrix, str(results), str(machine)], env=env
    )
    try:
        deadline = time.monotonic() + 30
        while not list((results / TAG / "runs").glob("*.jsonl")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(UserError, match="another run-matrix is already running"):
            _run(tmp_path, matrix)
        _run(tmp_path, matrix, shard=(0, 2))  # another shard may run beside it
    finally:
        proc.kill()
        proc.wait()
    _run(tmp_path, matrix)  # the lock died with the process


def test_gpu_slots_pin_one_worker_per_visible_device(monkeypatch):
    from slidesparse.run.pool import gpu_slots

    assert gpu_slots("all", has_gpu=False, workers=2) == [None, None]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_slots("0,1", has_gpu=True) == ["0", "1"]
    assert gpu_slots("all", has_gpu=True, gpu_count=4) == ["0", "1", "2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu_slots("all", has_gpu=True, gpu_count=8) == ["2", "3"]
    assert gpu_slots("1", has_gpu=True) == ["3"]
    with pytest.raises(UserError, match="more devices"):
        gpu_slots("0,2", has_gpu=True)
    with pytest.raises(UserError, match="bad --gpus"):
        gpu_slots("first", has_gpu=True)


def test_one_worker_per_device_and_a_killed_worker_is_replaced_on_its_device(tmp_path):
    """The two-GPU dispatch on CPU workers with two fake device ids: each worker sees only its
    own CUDA_VISIBLE_DEVICES, every cell finishes exactly once, and the worker a cell killed
    comes back pinned to the same device."""
    from slidesparse.run.matrix import expand, load_matrix
    from slidesparse.run.pool import PoolConfig, dispatch

    matrix = _matrix(
        tmp_path,
        """
        blocks:
          - task: noop
            axes: {action: [exit], index: [99]}
          - task: noop
            axes: {action: [sleep], sleep_s: [0.05], count: 12}
        """,
    )
    cells = expand(load_matrix(matrix)[0])
    finished: dict[str, dict] = {}
    events: list[dict] = []

    def finish(cell, result):
        assert cell.cell_id not in finished, "a cell finished twice"
        finished[cell.cell_id] = result

    config = PoolConfig(
        slots=["0", "1"], device="cpu", gpu_tag=TAG, cache_dir=tmp_path / "cache",
        log_dir=tmp_path / "logs", run_id="r",
    )  # fmt: skip

    def event(name, **fields):
        events.append({"event": name, **fields})

    dispatch(cells, config, finish=finish, event=event, note=lambda _: None,
             on_tick=lambda: None, stopped=lambda: False)  # fmt: skip
    assert set(finished) == {c.cell_id for c in cells}
    status = [r["status"] for r in finished.values()]
    assert status.count("ok") == 12 and status.count("failed") == 1
    seen = {r["rows"][0]["extra"]["visible_devices"] for r in finished.values() if r.get("rows")}
    assert seen == {"0", "1"}
    starts = [(e["slot"], e["gpu"]) for e in events if e["event"] == "worker_start"]
    assert set(starts) == {(0, "0"), (1, "1")}
    assert len(starts) == 3  # the killed worker was started again, on its own device


def test_dense_gemm_groups_queue_before_the_sparse_cells_paired_with_them():
    from slidesparse.run.matrix import expand, parse_matrix
    from slidesparse.run.pool import _setup_groups

    matrix = parse_matrix(
        "blocks:\n"
        "  - task: kernel-gemm\n"
        "    axes: {mode: [square], backend: [cpu-ref], dtype: [int8, fp8],\n"
        "           sparsity: [2_8, dense, 2_4], M: [32, 64]}\n"
    )
    cells = expand(matrix)
    queued = [cell for group in _setup_groups(cells).values() for cell in group]
    assert sorted(c.cell_id for c in queued) == sorted(c.cell_id for c in cells)
    dense = [c for c in cells if c.params["sparsity"] == "dense"]
    assert queued[: len(dense)] == dense == [c for c in queued if c.params["sparsity"] == "dense"]
    # Within a rank, groups keep the matrix's order.
    assert queued[len(dense) :] == [c for c in cells if c.params["sparsity"] != "dense"]


def test_plan_counts_a_tasks_one_time_costs_once_per_key():
    from machines import make_machine

    from slidesparse.run.matrix import expand, parse_matrix
    from slidesparse.run.runner import Plan, PlannedCell
    from slidesparse.tasks import get_task

    matrix = parse_matrix(
        "blocks:\n"
        "  - task: kernel-gemm\n"
        "    axes: {mode: [square], backend: [cusparselt], dtype: [int8, fp8],\n"
        "           sparsity: [2_8], M: [64, 128, 256]}\n"
    )
    cells = expand(matrix)
    spec = get_task("kernel-gemm")
    per_cell = sum(spec.cost(c.params)[1] for c in cells)
    setups = sum(spec.cost(c.params)[0] for c in cells)  # one setup key per (dtype, N, K)
    plan = Plan(
        "m", make_machine("H200_x", cc=(9, 0)), [PlannedCell(c, None, "run") for c in cells]
    )
    seconds, unknown, modelled, _ = plan.estimate(1)
    assert (unknown, modelled) == (0, 6)
    # Vetting the cuSPARSELt grid is paid once per dtype in the run, not once per cell.
    assert seconds == pytest.approx(per_cell + setups + 2 * 20.0)


def test_ranks_reorder_groups_within_a_task_only():
    from slidesparse.run.matrix import expand, parse_matrix
    from slidesparse.run.pool import _setup_groups

    matrix = parse_matrix(
        "blocks:\n"
        "  - task: kernel-gemm\n"
        "    axes: {mode: [square], backend: [cpu-ref], dtype: [int8], sparsity: [2_8], M: [32]}\n"
        "  - task: noop\n"
        "    axes: {count: 2}\n"
        "  - task: kernel-gemm\n"
        "    axes: {mode: [square], backend: [cpu-ref], dtype: [int8], sparsity: [dense],\n"
        "           M: [64]}\n"
    )
    queued = [c for g in _setup_groups(expand(matrix)).values() for c in g]
    assert [c.task for c in queued] == ["kernel-gemm", "kernel-gemm", "noop", "noop"]
    assert [c.params.get("sparsity") for c in queued[:2]] == ["dense", "2_8"]
