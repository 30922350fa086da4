"""bench gemm bookkeeping: cell order, speedup table, suspect flags, published comparison."""

from __future__ import annotations

import pytest

from slidesparse.core.errors import Unsupported
from slidesparse.tasks import gemm_bench as bench


def _row(backend, sparsity, lat, layer="qkv", dtype="int8", M=16384, **kw):
    base = {"backend": backend, "sparsity": sparsity, "latency_us": lat, "layer": layer}
    return {**base, "dtype": dtype, "M": M, "N": 8, "K": 8, "correct": True, "status": "ok", **kw}


def test_cells_run_dense_first():
    plan = bench.BenchPlan("Qwen2.5-7B", ("int8",), (64, 128), ("dense", "2_4", "2_8"),
                           ("cublaslt",), ("cusparselt",))  # fmt: skip
    cells = plan.cells()
    assert [(c["sparsity"], c["M"]) for c in cells] == [
        ("dense", 64), ("dense", 128), ("2_4", 64), ("2_4", 128), ("2_8", 64), ("2_8", 128)
    ]  # fmt: skip
    assert all(c["mode"] == "model" and c["model"] == "Qwen2.5-7B" for c in cells)


def test_speedup_table_uses_strongest_dense_and_flags_suspects():
    rows = [
        _row("torch-builtin", "dense", 200.0),
        _row("cublaslt", "dense", 100.0),
        _row("cusparselt", "2_4", 55.0),
        _row("torch-cslt", "2_4", 60.0),
        _row("cusparselt", "2_8", 70.0),  # 1.43x > 1.33·1.03: suspect
        _row("cusparselt", "2_6", 90.0, correct=False),  # incorrect rows never count
    ]
    lines = {ln["pattern"]: ln for ln in bench.speedup_table(rows)}
    assert set(lines) == {"2_4", "2_8"}
    assert (
        lines["2_4"]["dense_backend"] == "cublaslt"
        and lines["2_4"]["sparse_backend"] == "cusparselt"
    )
    assert lines["2_4"]["speedup"] == pytest.approx(100 / 55)
    assert lines["2_4"]["suspect"] is False
    assert lines["2_8"]["suspect"] is True
    assert lines["2_8"]["pct_of_bound"] == pytest.approx(100 * (100 / 70) / (8 / 6))
    # Eff_L = (S_L / S_2_4) / (0.5 · L/(L-2))
    assert lines["2_8"]["eff_vs_2_4"] == pytest.approx(((100 / 70) / (100 / 55)) / (0.5 * 8 / 6))
    text = bench.format_table(list(lines.values()))
    assert "SUSPECT" in text and "2_8" in text


def test_published_comparison_lists_model_totals():
    rows = [
        _row("cublaslt", "dense", 100.0, layer="total"),
        _row("cusparselt", "2_4", 60.0, layer="total"),
    ]
    text = bench.published_comparison(bench.speedup_table(rows), "Qwen2.5-7B")
    assert "1.67" in text and "1.54" in text


def test_run_bench_records_unsupported_and_failed_cells():
    plan = bench.BenchPlan(None, ("int8",), (64,), ("dense", "2_4"), ("cublaslt",), ("cusparselt",))

    def task(params, ctx):
        if params["sparsity"] == "dense":
            raise Unsupported("no CUDA device")
        raise RuntimeError("CUDA error: an illegal instruction\nstack")

    rows = bench.run_bench(plan, ctx=None, task=task)
    assert [(r["status"], r["error_message"]) for r in rows] == [
        ("skipped", "no CUDA device"),
        ("failed", "CUDA error: an illegal instruction"),
    ]
