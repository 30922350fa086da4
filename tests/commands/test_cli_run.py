"""``run-matrix``, ``plan`` and ``results`` through the real CLI entry point."""

from __future__ import annotations

import json
import os
import re
import shutil
import textwrap

import pytest

from slidesparse.cli import main
from slidesparse.results.store import Store, latest_per_cell

TAG = "CPU_cli_py311_cpu_x86_64"


@pytest.fixture
def env(tmp_path, monkeypatch):
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps({"gpu_tag": TAG, "cc": None, "memory_bytes": None}))
    results = tmp_path / "results"
    monkeypatch.setenv("SLIDESPARSE_RESULTS", str(results))

    def write(text: str, name: str = "m.yaml") -> str:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)

    return {"machine": str(machine), "results": results, "write": write}


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_plan_results_resume(env, capsys):
    matrix = env["write"]("blocks: [{task: noop, axes: {count: 6}}]")
    common = ["--preset", matrix, "--machine", env["machine"]]
    code, out, _ = _run(capsys, "plan", *common)
    assert code == 0
    assert f"on {TAG}: 6 cells" in out and "estimated time: unknown" in out
    code, out, _ = _run(capsys, "run-matrix", *common, "--progress", "plain")
    assert code == 0, out
    assert "6 ok, 0 failed, 0 skipped" in out
    assert out.count("] ok ") == 6
    code, out, _ = _run(capsys, "plan", *common)
    assert "noop" in out and "estimated time" not in out
    row = next(ln for ln in out.splitlines() if ln.strip().startswith("noop"))
    assert row.split()[1:] == ["0", "0", "6", "0", "0"]  # run skip done failed skipped
    code, out, _ = _run(capsys, "run-matrix", *common, "--dry-run")
    assert code == 0 and "would run" not in out
    code, out, _ = _run(capsys, "run-matrix", *common, "--rerun-all", "--dry-run")
    assert out.count("would run ") == 6
    code, out, _ = _run(capsys, "results")
    assert code == 0
    assert f"{TAG}" in out and "6 rows, 6 cells" in out and "noop" in out and "6 ok" in out


def test_failures_exit_1_with_a_summary(env, capsys):
    matrix = env["write"](
        """
        blocks:
          - task: noop
            axes: {count: 3}
          - task: noop
            axes: {action: [segfault, raise], index: [7]}
        """
    )
    code, out, _ = _run(
        capsys, "run-matrix", "--preset", matrix, "--machine", env["machine"], "--progress", "none"
    )
    assert code == 1
    assert "3 ok, 2 failed, 0 skipped" in out
    assert "failed [crash]" in out and "SIGSEGV" in out and "failed [error]" in out
    frame = Store(env["results"]).read(TAG)
    assert sorted(latest_per_cell(frame)["status"]) == ["failed", "failed", "ok", "ok", "ok"]
    # Resuming without --retry-failed keeps the failures and still says so.
    code, out, _ = _run(
        capsys, "run-matrix", "--preset", matrix, "--machine", env["machine"], "--progress", "none"
    )
    assert code == 1 and "2 failed earlier (use --retry-failed)" in out


BAD_FILES = {
    "yaml syntax": ("blocks: [ {task: noop", "YAML syntax error"),
    "unknown key": ("blocks: [{task: noop, axes: {acton: [ok]}}]", "acton: unknown key"),
    "bad dtype": (
        "blocks: [{task: kernel-gemm, axes: {mode: square, backend: cpu-ref, dtype: fp9,"
        " sparsity: dense, M: 64}}]",
        "dtype.0: Input should be",
    ),
    "bad sparsity": (
        "blocks: [{task: kernel-gemm, axes: {mode: square, backend: cpu-ref, dtype: int8,"
        " sparsity: 3_8, M: 64}}]",
        "bad sparsity '3_8'",
    ),
    "empty axis": (
        "blocks: [{task: noop, axes: {action: []}}]",
        "action: empty axis",
    ),
    "wrong type": (
        "blocks: [{task: noop, timeout_s: soon, axes: {count: 2}}]",
        "timeout_s: Input should be a valid number",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_malformed_matrix_exits_2_naming_the_problem(env, capsys, kind):
    text, expected = BAD_FILES[kind]
    path = env["write"](text, name="bad.yaml")
    code, _, err = _run(capsys, "run-matrix", "--preset", path, "--machine", env["machine"])
    assert code == 2
    assert err.startswith(f"error: {path}")
    assert expected in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--shard", "3/3"], "bad --shard '3/3'"),
        (["--gpus", "x"], "bad --gpus 'x'"),  # checked on a machine without a GPU too
        (["--timeout", "0"], "Invalid value for '--timeout'"),
        (["--timeout", "-1"], "Invalid value for '--timeout'"),
        (["--target-spread", "0"], "Invalid value for '--target-spread'"),
        (["--target-spread", "1"], "Invalid value for '--target-spread'"),
    ],
)
def test_bad_options_exit_2(env, capsys, args, expected):
    code, _, err = _run(capsys, "run-matrix", "--machine", env["machine"], "--dry-run", *args)
    assert code == 2 and expected in err


def test_results_of_a_missing_folder_exits_2(tmp_path, capsys):
    code, _, err = _run(capsys, "results", str(tmp_path / "nope"))
    assert code == 2 and "no such results folder" in err


def test_shards_run_disjoint_parts_and_union_is_everything(env, capsys):
    matrix = env["write"]("blocks: [{task: noop, axes: {count: 9}}]")
    for i in range(3):
        code, _, _ = _run(
            capsys, "run-matrix", "--preset", matrix, "--machine", env["machine"],
            "--shard", f"{i}/3", "--progress", "none",
        )  # fmt: skip
        assert code == 0
    frame = Store(env["results"]).read(TAG)
    assert len(frame) == 9 and frame["cell_id"].is_unique


@pytest.mark.slow
def test_cpu_smoke_preset_does_real_work(smoke_store):
    """The README's CPU main job: cpu-ref GEMMs run and are exact, GPU cells are skipped."""
    store = Store(smoke_store)
    (tag,) = store.gpu_tags()
    frame = latest_per_cell(store.read(tag))
    ok = frame[frame["status"] == "ok"]
    skipped = frame[frame["status"] == "skipped"]
    assert len(ok) >= 16 and (frame["status"] != "failed").all()
    assert set(ok["backend"]) == {"cpu-ref", "triton"}  # triton: kernel-quant, interpreted
    assert ok["correct"].all()
    assert (ok["latency_us"] > 0).all() and ok["timer"].notna().all()
    quant = ok[ok["task"] == "kernel-quant"]
    assert len(quant) >= 12 and set(quant["timer"]) == {"perf_counter(triton-interpreter)"}
    # every timing is adaptive; sparse GEMM cells after their dense twin are timed with it
    assert (ok["n_samples"] >= 3).all() and ok["latency_spread"].notna().all()
    assert ok["spread_met"].notna().all()
    gemm = ok[(ok["task"] == "kernel-gemm") & (ok["sparsity"] != "dense")]
    paired = [json.loads(e) for e in gemm["extra"] if "speedup_lo" in json.loads(e)]
    assert paired and all(e["speedup_lo"] <= e["speedup_vs_dense"] <= e["speedup_hi"]
                          for e in paired)  # fmt: skip
    assert set(skipped["error_message"]) == {
        "no CUDA device",
        "no CUDA device (too large for the Triton interpreter on CPU)",
    }
    assert {"kernel-quant", "e2e-prefill", "e2e-decode"} <= set(skipped["task"])
    assert store.read_machine(tag)["gpu_tag"] == tag


def test_plan_estimates_time_from_earlier_runs(env, capsys):
    matrix = env["write"](
        "blocks: [{task: noop, axes: {action: [sleep], sleep_s: [0.2], count: 4}}]"
    )
    common = ["--preset", matrix, "--machine", env["machine"]]
    assert _run(capsys, "run-matrix", *common, "--progress", "none")[0] == 0
    code, out, _ = _run(capsys, "plan", *common, "--rerun-all")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("estimated time:"))
    assert re.match(r"estimated time: \d+s on 1 worker\(s\)$", line), line  # 4 x ~0.2 s


def test_a_corrupt_part_is_reported_moved_aside_and_its_cells_rerun(env, capsys):
    matrix = env["write"]("blocks: [{task: noop, axes: {count: 3}}]")
    common = ["--preset", matrix, "--machine", env["machine"], "--progress", "none"]
    assert _run(capsys, "run-matrix", *common)[0] == 0
    store = Store(env["results"])
    (part,) = store.part_files(TAG)
    part.write_bytes(part.read_bytes()[:100])  # truncated, e.g. by a full disk elsewhere
    code, out, err = _run(capsys, "run-matrix", *common)
    assert code == 0
    assert "warning: corrupt result file" in err and "quarantine" in err
    assert "3 ok" in out  # its cells were not stored any more, so they ran again
    assert (store.tag_dir(TAG) / "quarantine" / part.name).exists()
    assert len(store.read(TAG)) == 3


@pytest.mark.slow
def test_smoke_store_resumes_with_nothing_to_run_and_merges_without_doubling(
    smoke_store, tmp_path, capsys
):
    results = tmp_path / "results"
    shutil.copytree(smoke_store, results)
    code, out, _ = _run(capsys, "run-matrix", "--preset", "smoke", "--results", str(results))
    assert code == 0 and "0 ok, 0 failed, 0 skipped" in out
    before = {p: p.read_bytes() for p in Store(smoke_store).part_files()}
    merged = tmp_path / "merged"
    for _ in range(2):  # a second merge of the same input adds nothing
        assert _run(capsys, "merge", str(smoke_store), str(results), "-o", str(merged))[0] == 0
    (tag,) = Store(merged).gpu_tags()
    frame = Store(merged).read(tag)
    assert frame["row_id"].is_unique
    assert set(frame["cell_id"]) == set(Store(smoke_store).read(tag)["cell_id"])
    assert {p: p.read_bytes() for p in Store(smoke_store).part_files()} == before


def test_gpus_beyond_the_machine_exit_2(tmp_path, capsys):
    machine = tmp_path / "machine.json"
    record = {"gpu_tag": "H200_cc90_py312_cu130_x86_64", "cc": [9, 0], "gpu_count": 2}
    machine.write_text(json.dumps(record))
    args = ["run-matrix", "--machine", str(machine), "--dry-run", "--results", str(tmp_path)]
    code, _, err = _run(capsys, *args, "--gpus", "99")
    assert code == 2 and "it has 2 GPU(s), indices 0..1" in err
    assert len(err.strip().splitlines()) == 1
    assert _run(capsys, *args, "--gpus", "1")[0] == 0


@pytest.mark.parametrize("cc", ['"9.0"', "[9]", '["9", "0"]', "90"])
def test_machine_record_with_a_bad_cc_exits_2(tmp_path, capsys, cc):
    machine = tmp_path / "machine.json"
    machine.write_text(f'{{"gpu_tag": "H200_cc90_py312_cu130_x86_64", "cc": {cc}}}')
    code, _, err = _run(capsys, "plan", "--machine", str(machine), "--results", str(tmp_path))
    assert code == 2 and "cc must be [major, minor] like [9, 0]" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_duplicate_yaml_key_exits_2_naming_it(env, capsys):
    path = env["write"]("blocks:\n  - task: noop\n    axes: {count: 2, count: 3}\n", "dup.yaml")
    code, _, err = _run(capsys, "plan", "--preset", path, "--machine", env["machine"])
    assert code == 2 and "key 'count' is given twice" in err and "line 3" in err


def test_merge_into_one_of_its_inputs_exits_2_and_leaves_it_alone(smoke_store, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(smoke_store, copy)
    before = sorted(p.read_bytes() for p in copy.rglob("*") if p.is_file())
    code, _, err = _run(capsys, "merge", str(smoke_store), str(copy), "-o", str(copy))
    assert code == 2 and "is also an input" in err
    assert sorted(p.read_bytes() for p in copy.rglob("*") if p.is_file()) == before


def test_report_refuses_a_folder_that_is_not_a_store(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"not results")
    code, _, err = _run(capsys, "report", str(folder))
    assert code == 2 and "not a results store" in err
    assert sorted(p.name for p in folder.iterdir()) == ["cat.jpg"]  # nothing written into it


def test_result_files_follow_the_umask(smoke_store):
    import stat

    store = Store(smoke_store)
    (tag,) = store.gpu_tags()
    files = [*store.part_files(tag), store.tag_dir(tag) / "machine.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o666 & ~mask}


def test_top_level_help_is_not_cut(capsys):
    code, out, _ = _run(capsys, "--help")
    listing = out.split("Commands:")[1]
    assert code == 0 and "run-matrix" in listing
    assert "..." not in listing and "\N{HORIZONTAL ELLIPSIS}" not in listing


def test_piped_tables_are_never_cut(capsys, monkeypatch):
    # A long cell (the ptxas path) stays whole when the output is a file, not a terminal.
    monkeypatch.setenv("TRITON_PTXAS_PATH", "/opt/" + "x" * 150 + "/ptxas")
    code, out, _ = _run(capsys, "env")
    assert code == 0 and "\N{HORIZONTAL ELLIPSIS}" not in out


def test_results_reads_a_corrupt_store_without_touching_it_and_repair_tidies_it(env, capsys):
    matrix = env["write"]("blocks: [{task: noop, axes: {count: 2}}]")
    assert _run(capsys, "run-matrix", "--preset", matrix, "--machine", env["machine"])[0] == 0
    store = Store(env["results"])
    (part,) = store.part_files(TAG)
    part.write_bytes(part.read_bytes()[:100])
    code, out, _ = _run(capsys, "results")
    assert code == 0 and "skipped unreadable" in out and part.exists()
    code, out, _ = _run(capsys, "results", "--repair")
    assert code == 0 and "1 quarantined" in out and not part.exists()
    assert (store.tag_dir(TAG) / "quarantine" / part.name).exists()
