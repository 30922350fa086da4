"""``slidesparse bench gemm`` end to end on the CPU (cpu-ref backends), and its input errors."""

from __future__ import annotations

import json

from slidesparse.cli import main


def test_bench_gemm_square_on_cpu(tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    rc = main([
        "bench", "gemm", "--square", "--M", "64", "--dtype", "int8", "--sparsity", "dense,2_4,6:8",
        "--dense-backends", "cpu-ref", "--sparse-backends", "cpu-ref",
        "--cache-dir", str(tmp_path / "cache"), "--json-out", str(out),
    ])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "speedup" in text and "2_8" in text and "ideal" in text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["sparsity"] for r in rows] == ["dense", "2_4", "2_8"]
    assert all(r["correct"] for r in rows)


def test_bench_gemm_needs_model_or_square(capsys):
    assert main(["bench", "gemm", "--dtype", "int8"]) == 2
    assert "--model NAME or --square" in capsys.readouterr().err


def test_bench_gemm_rejects_unknown_dtype_and_backend(capsys):
    assert main(["bench", "gemm", "--square", "--dtype", "int3"]) == 2
    assert "valid dtypes" in capsys.readouterr().err
    assert main(["bench", "gemm", "--square", "--dense-backends", "cutlass"]) == 2
    assert "valid backends" in capsys.readouterr().err
    assert main(["bench", "gemm", "--square", "--M", "0"]) == 2
