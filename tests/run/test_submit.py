"""submit slurm / submit k8s: the scripts and manifests, and a real single-node Slurm run
(CI starts one with .ci/slurm-up.sh; elsewhere that test is skipped with the reason)."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from slidesparse.cli import main
from slidesparse.core.errors import UserError
from slidesparse.run.submit import ShardJob, slurm_scripts


def test_slurm_array_script_runs_one_shard_per_task(tmp_path):
    job = ShardJob("paper", 8, tmp_path / "r", gpus_per_task=1, partition="gpu", time="12:00:00")
    array, merge = slurm_scripts(job)
    assert "#SBATCH --array=0-7" in array and "#SBATCH --gres=gpu:1" in array
    assert "#SBATCH --partition=gpu" in array and "#SBATCH --time=12:00:00" in array
    assert '--shard "$SLURM_ARRAY_TASK_ID/8"' in array and "--gpus all" in array
    assert f'--results "{tmp_path / "r"}/shards/shard-$SLURM_ARRAY_TASK_ID-of-8"' in array
    assert 'if [ "$status" -eq 1 ]; then exit 0; fi' in array  # failed cells: still done
    assert f'merge "${{shards[@]}}" -o {tmp_path / "r"}/merged' in merge
    assert "--lang zh" in merge and "--gres" not in merge
    cpu = slurm_scripts(ShardJob("smoke", 3, tmp_path / "r", gpus_per_task=0))[0]
    assert "--gres" not in cpu and "--gpus all" not in cpu


def test_a_preset_file_is_passed_by_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("m.yaml").write_text("blocks: [{task: noop, axes: {count: 2}}]")
    array, _ = slurm_scripts(ShardJob("m.yaml", 2, Path("r")))
    assert f"--preset {tmp_path / 'm.yaml'}" in array and str(tmp_path / "r") in array
    with pytest.raises(UserError, match="no such matrix file"):
        slurm_scripts(ShardJob("missing.yaml", 2, Path("r")))


def test_without_sbatch_submitting_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    code = main(["submit", "slurm", "--shards", "2", "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "sbatch not found" in err and len(err.strip().splitlines()) == 1


def test_dry_run_prints_both_scripts(tmp_path, capsys):
    args = ["submit", "slurm", "--preset", "smoke", "--shards", "3", "--dry-run"]
    assert main([*args, "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "# array.sbatch" in out and "# merge.sbatch" in out and "--array=0-2" in out
    assert not (tmp_path / "r").exists()


def test_k8s_indexed_job_validates_against_the_kubernetes_schema(tmp_path, capsys):
    kv = pytest.importorskip("kubernetes_validate")
    args = ["submit", "k8s", "--shards", "4", "--results", "/results", "--image", "ss:1"]
    assert main([*args, "--claim", "results-pvc", "--namespace", "bench"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    array, merge = docs
    for d in docs:
        kv.validate(d, "1.31", strict=True)  # raises on an unknown field or a wrong type
    spec = array["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 4
    command = spec["template"]["spec"]["containers"][0]["command"][-1]
    assert '--shard "${JOB_COMPLETION_INDEX}/4"' in command
    assert "/results/shards/shard-${JOB_COMPLETION_INDEX}-of-4" in command
    limits = spec["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": 1}
    assert "merge" in merge["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    with pytest.raises(kv.ValidationError):  # the check can fail
        kv.validate({**array, "spec": {**spec, "completionsMode": "Indexed"}}, "1.31", True)


# ------------------------------------------------------------------ a real Slurm cluster


def _slurm_up() -> str | None:
    """None if a Slurm cluster answers here, else why not."""
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return "no Slurm client here (CI starts a single-node cluster with .ci/slurm-up.sh)"
    p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if p.returncode != 0 or not any(
        s in p.stdout for s in ("idle", "mixed", "allocated", "completing")
    ):
        return f"Slurm does not answer: {(p.stderr or p.stdout).strip()[:200]}"
    return None


def _wait(ids: list[str], timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        p = subprocess.run(
            ["squeue", "-h", "-j", ",".join(ids)], capture_output=True, text=True, timeout=30
        )
        if not p.stdout.strip():
            return
        time.sleep(2)
    raise AssertionError(f"jobs {ids} still queued after {timeout_s} s")


def _submit(results: Path, capsys) -> tuple[str, str]:
    args = ["submit", "slurm", "--preset", "smoke", "--shards", "3"]
    args += ["--gpus-per-task", "0", "--cpus-per-task", "1", "--results", str(results)]
    assert main(args) == 0
    out = capsys.readouterr().out
    words = out.split()
    return words[2], words[words.index("merge") + 2].rstrip(";")


def _merged_cells(results: Path):
    from slidesparse.results.store import Store, latest_per_cell

    frame = Store(results / "merged").read()
    return frame, latest_per_cell(frame)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_smoke_as_a_real_slurm_array_with_a_cancelled_task_and_a_resubmission(
    tmp_path, capsys, monkeypatch
):
    why = _slurm_up()
    if why:
        pytest.skip(why)
    from slidesparse.run.matrix import expand, load_matrix

    monkeypatch.chdir(tmp_path)
    n_cells = len(expand(load_matrix("smoke")[0]))
    t0 = time.monotonic()

    # 1. three shards plus the merge, to the end
    results = tmp_path / "all"
    array_id, merge_id = _submit(results, capsys)
    _wait([array_id, merge_id])
    frame, latest = _merged_cells(results)
    assert len(latest) == n_cells and latest["cell_id"].is_unique
    assert (frame[frame["status"] == "ok"].groupby("cell_id").size() == 1).all()
    assert sorted(p.name for p in (results / "reports").glob("*.md"))  # rendered
    first_s = time.monotonic() - t0

    # 2. cancel one array task mid-run, then submit again: nothing lost, nothing doubled
    results = tmp_path / "cancelled"
    array_id, merge_id = _submit(results, capsys)
    shard0 = results / "shards" / "shard-0-of-3"
    deadline = time.monotonic() + 300
    while not list(shard0.glob("*/parts/*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.5)  # cancel once shard 0 has stored its first rows
    subprocess.run(["scancel", f"{array_id}_0"], check=True, timeout=30)
    _wait([array_id, merge_id])
    _, partial = _merged_cells(results) if (results / "merged").is_dir() else (None, [])
    array_id, merge_id = _submit(results, capsys)  # the same command again
    _wait([array_id, merge_id])
    frame, latest = _merged_cells(results)
    assert len(partial) < n_cells  # the cancel did cut shard 0 short
    assert len(latest) == n_cells and latest["cell_id"].is_unique
    ok = frame[frame["status"] == "ok"]
    assert (ok.groupby("cell_id").size() == 1).all()  # no cell measured twice
    print(json.dumps({"first_submission_s": round(first_s), "total_s": time.monotonic() - t0}))
