"""Foundation CLI: --version, env, patterns, verify, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from slidesparse import __version__
from slidesparse.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "slidesparse", *args], capture_output=True, text=True, timeout=300
    )


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_env_json(capsys):
    assert main(["env", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["gpu_tag"].count("_") >= 4 and record["torch"]


def test_patterns_table(capsys):
    assert main(["patterns", "--K", "3584", "--sparsity", "6:8,2_inf"]) == 0
    out = capsys.readouterr().out
    assert "5376" in out and "7168" in out and "1.333x" in out


@pytest.mark.parametrize(
    "args",
    [
        ["patterns", "--sparsity", "3_8"],
        ["patterns", "--sparsity", "2_7"],
        ["patterns", "--sparsity", "2_2"],
        ["patterns", "--sparsity", "abc"],
        ["patterns", "--K", "-5"],
        ["verify", "--model", "GPT-5"],
        ["verify", "--sparsity", "2_7"],
        ["build-kernels", "--cutlass-arch", "89"],  # refused before any compiling
    ],
)
def test_bad_input_one_line_exit_2(args):
    res = run_cli(*args)
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr


def _tiny_model(tmp_path):
    cfg = {
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
    path = tmp_path / "tiny" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(cfg))
    return str(path)


def test_verify_passes_on_cpu(tmp_path, capsys):
    assert main(["verify", "--model", _tiny_model(tmp_path), "--sparsity", "all"]) == 0
    assert "32/32 checks passed" in capsys.readouterr().out


def test_verify_exits_1_on_mismatch(tmp_path, monkeypatch, capsys):
    import slidesparse.core.sparsity as sp

    real = sp.slide_index

    def broken(K, pattern, device=None):
        idx = real(K, pattern, device)
        return idx.roll(1) if sp.parse_pattern(pattern).name == "2_8" else idx

    monkeypatch.setattr(sp, "slide_index", broken)
    assert main(["verify", "--model", _tiny_model(tmp_path), "--sparsity", "2_4,2_8"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "4 FAILED" in out


def test_verify_cuda_without_gpu_is_user_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    res = run_cli("verify", "--model", _tiny_model(tmp_path), "--device", "cuda")
    assert res.returncode == 2 and "no CUDA device" in res.stderr


def test_store_warnings_are_one_line_each(tmp_path):
    from slidesparse.results.store import Store

    store = Store(tmp_path / "results")
    row = {"run_id": "r", "cell_id": "c", "task": "noop", "status": "ok", "latency_us": 1.0}
    store.write_rows("CPU_cc0_py311_cpu_x86_64", [row], name="good")
    bad = store.tag_dir("CPU_cc0_py311_cpu_x86_64") / "parts" / "bad.parquet"
    bad.write_bytes(b"not parquet")
    res = run_cli("report", str(store.root), "--out", str(tmp_path / "out"), "--no-plots")
    assert res.returncode == 0, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "bad.parquet" in lines[0]
    assert "StoreWarning" not in res.stderr and bad.exists()  # reports never move files


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["Llama3.2-1B", "Qwen2.5-7B"])
def test_verify_on_cuda_passes(model):
    res = run_cli("verify", "--model", model, "--device", "cuda", "--M", "16")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "32/32 checks passed" in res.stdout
