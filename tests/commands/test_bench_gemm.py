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
        "--target-spread", "0.2",
    ])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "speedup" in text and "2_8" in text and "ideal" in text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["sparsity"] for r in rows] == ["dense", "2_4", "2_8"]
    assert all(r["correct"] for r in rows)
    # Sparse cells are timed interleaved with the dense one: a speedup with its interval.
    for r in rows[1:]:
        e = r["extra"]
        assert e["dense_backend"] == "cpu-ref" and e["target_spread"] == 0.2
        assert e["speedup_lo"] <= e["speedup_vs_dense"] <= e["speedup_hi"]
        assert f"{e['speedup_vs_dense']:.3f} ({e['speedup_lo']:.3f}–" in text


def test_bench_gemm_needs_model_or_square(capsys):
    assert main(["bench", "gemm", "--dtype", "int8"]) == 2
    assert "--model NAME or --square" in capsys.readouterr().err


def test_bench_gemm_rejects_unknown_dtype_and_backend(capsys):
    assert main(["bench", "gemm", "--square", "--dtype", "int3"]) == 2
    assert "valid dtypes" in capsys.readouterr().err
    assert main(["bench", "gemm", "--square", "--dense-backends", "cutlass9"]) == 2
    assert "valid backends" in capsys.readouterr().err
    assert main(["bench", "gemm", "--square", "--M", "0"]) == 2


def test_bench_gemm_rejects_a_target_spread_outside_0_1(capsys):
    for bad in ("0", "1", "-0.1"):
        assert main(["bench", "gemm", "--square", "--target-spread", bad]) == 2
        assert "--target-spread" in capsys.readouterr().err
