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


def _paired(lat, speedup, lo, hi, dense_us, dense_backend="cublaslt"):
    extra = {"speedup_vs_dense": speedup, "speedup_lo": lo, "speedup_hi": hi,
             "dense_latency_us": dense_us, "dense_backend": dense_backend}  # fmt: skip
    return {"extra": extra}


def test_speedup_table_takes_the_interleaved_speedup_and_its_interval():
    rows = [
        _row("cublaslt", "dense", 100.0),
        _row("cusparselt", "2_4", 60.0, **_paired(60.0, 1.62, 1.60, 1.64, 97.0)),
        _row("cusparselt", "2_8", 98.0, **_paired(98.0, 1.01, 0.99, 1.03, 99.0)),
        # paired with another dense backend than the baseline: the plain ratio, no interval
        _row("cusparselt", "2_6", 80.0, **_paired(80.0, 1.4, 1.3, 1.5, 112.0, "torch-builtin")),
    ]
    lines = {ln["pattern"]: ln for ln in bench.speedup_table(rows)}
    assert (lines["2_4"]["speedup"], lines["2_4"]["dense_us"]) == (1.62, 97.0)
    assert (lines["2_4"]["speedup_lo"], lines["2_4"]["speedup_hi"]) == (1.60, 1.64)
    assert lines["2_4"]["noise"] is False and lines["2_8"]["noise"] is True
    assert lines["2_6"]["speedup"] == pytest.approx(100 / 80)
    assert lines["2_6"]["speedup_lo"] is None and lines["2_6"]["noise"] is False
    text = bench.format_table(list(lines.values())).splitlines()
    row_of = {ln.split()[3]: ln for ln in text[1:]}
    assert "1.620 (1.600–1.640)" in row_of["2_4"] and "noise" not in row_of["2_4"]
    assert "1.010 (0.990–1.030)" in row_of["2_8"]
    assert row_of["2_8"].endswith("~1.0 (within noise)")
    assert "1.250" in row_of["2_6"] and "(" not in row_of["2_6"]


def test_format_speedup():
    assert bench.format_speedup(None, None, None) == "-"
    assert bench.format_speedup(1.5, None, None) == "1.500"
    assert bench.format_speedup(1.0, 0.98, 1.02) == "1.000 (0.980–1.020)"


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


def test_backend_comparison_names_the_faster_backend_and_each_total():
    from slidesparse.tasks.gemm_bench import backend_comparison

    def row(backend, sparsity, layer, lat):
        shape = {"mode": "model", "model": "m", "dtype": "fp8", "M": 64, "N": 8, "K": 8}
        return {**shape, "layer": layer, "sparsity": sparsity, "backend": backend,
                "latency_us": lat}  # fmt: skip

    rows = [row("cublaslt", "dense", "qkv", 10.0), row("cutlass", "dense", "qkv", 9.0)]
    rows += [row("cublaslt", "dense", "total", 10.0), row("cutlass", "dense", "total", 9.0)]
    text = backend_comparison(rows).splitlines()
    assert any("cutlass" in ln and "1/1" in ln and "0.900" in ln for ln in text), text
    assert any("cublaslt" in ln and "0/1" in ln and "1.111" in ln for ln in text), text
    assert any(ln.split()[-2:] == ["cutlass", "9.0"] for ln in text), text
    assert backend_comparison([row("cublaslt", "dense", "qkv", 1.0)]) == ""
