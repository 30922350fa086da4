"""The kernel-gemm task on the CPU (cpu-ref backend): rows, memo reuse, verdicts, totals."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from slidesparse.core import metrics
from slidesparse.core.errors import Unsupported, UserError
from slidesparse.gemm import operands
from slidesparse.tasks import TaskContext, get_task
from slidesparse.tasks import kernel_gemm as kg


@pytest.fixture
def ctx(tmp_path: Path) -> TaskContext:
    return TaskContext(device="cpu", gpu_tag="cpu_test", cache_dir=tmp_path)


def _run(ctx, **params):
    base = {"mode": "square", "M": 64, "N": 128, "K": 192, "dtype": "int8"}
    return get_task("kernel-gemm").fn({**base, **params}, ctx)


def test_registered_as_cpu_capable_task():
    spec = get_task("kernel-gemm")
    assert spec.needs_gpu({"backend": "cpu-ref"}) is False
    assert spec.needs_gpu({"backend": "cublaslt"}) is True
    a = spec.setup_key({"backend": "cpu-ref", "dtype": "int8", "sparsity": "2_8", "N": 1, "K": 2})
    b = spec.setup_key({"backend": "cpu-ref", "dtype": "int8", "sparsity": "2_8", "N": 1, "K": 2})
    assert a == b != spec.setup_key({"backend": "cpu-ref", "dtype": "fp8", "sparsity": "2_8"})


@pytest.mark.parametrize("sparsity", ["dense", "2_4", "6:8", "2_inf"])
def test_square_cell_row(ctx, sparsity):
    (row,) = _run(ctx, sparsity=sparsity)
    assert row["backend"] == "cpu-ref" and row["mode"] == "square"
    assert row["correct"] is True and row["max_abs_err"] == 0.0
    assert row["timer"] == "perf_counter" and row["n_samples"] >= 3
    assert row["latency_p25_us"] <= row["latency_us"] <= row["latency_p75_us"]
    assert row["tops"] > 0 and row["gbps"] > 0
    assert row["out_dtype"] == "int32" and row["kernel"].startswith("torch.cpu.mm")
    expected_ks = {"dense": 192, "2_4": 192, "6:8": 288, "2_inf": 384}[sparsity]
    assert row["K_slide"] == expected_ks
    assert row["sparsity"] == {"6:8": "2_8"}.get(sparsity, sparsity)


def test_square_mode_defaults_to_m_n_k_equal(ctx):
    (row,) = get_task("kernel-gemm").fn({"mode": "square", "M": 96, "dtype": "bf16"}, ctx)
    assert (row["M"], row["N"], row["K"]) == (96, 96, 96) and row["correct"]


def test_weight_is_prepared_once_per_shape(ctx, monkeypatch):
    calls = []
    real = operands.pruned_weight
    monkeypatch.setattr(operands, "pruned_weight", lambda *a, **k: calls.append(a) or real(*a, **k))
    _run(ctx, sparsity="2_8", M=64)
    _run(ctx, sparsity="2_8", M=128)
    assert len(calls) == 1
    _run(ctx, sparsity="2_10", M=64)
    assert len(calls) == 2


def test_gpu_backend_on_cpu_worker_is_unsupported(ctx):
    with pytest.raises(Unsupported, match="no CUDA device"):
        _run(ctx, backend="cusparselt", sparsity="2_8")
    with pytest.raises(Unsupported, match="no CUDA device"):
        _run(ctx, backend="torch-builtin")


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"M": None}, "needs param 'M'"),
        ({"M": -4}, "positive integer"),
        ({"mode": "cube"}, "valid: model, square"),
        ({"dtype": "int4"}, "valid dtypes"),
        ({"out_dtype": "int16"}, "out_dtype"),
        ({"sparsity": "3_8"}, "valid"),
        ({"mode": "model", "model": None}, "needs param 'model'"),
    ],
)
def test_bad_params_are_user_errors(ctx, params, match):
    with pytest.raises(UserError, match=match):
        _run(ctx, **params)


def test_sparse_row_beating_the_bound_is_suspect(ctx):
    (dense,) = _run(ctx, sparsity="dense")
    key = next(iter(ctx.memo["kernel-gemm.dense-latency"]))
    assert ctx.memo["kernel-gemm.dense-latency"][key] == dense["latency_us"]
    ctx.memo["kernel-gemm.dense-latency"][key] = 1e12  # an absurdly weak dense baseline
    (row,) = _run(ctx, sparsity="2_8")
    assert row["baseline_suspect"] is True
    assert row["extra"]["speedup_vs_dense"] > 8 / 6 * metrics.SUSPECT_MARGIN
    ctx.memo["kernel-gemm.dense-latency"][key] = 1e-6
    (row,) = _run(ctx, sparsity="2_8")
    assert row["baseline_suspect"] is False


def test_sparse_row_without_dense_has_unknown_suspect(ctx):
    (row,) = _run(ctx, sparsity="2_4")
    assert row["baseline_suspect"] is None


def test_total_row_sums_layers():
    rows = [
        {"model": "m", "mode": "model", "dtype": "int8", "out_dtype": "int32", "backend": "b",
         "sparsity": "2_8", "layer": name, "M": 4, "N": 2, "K": 3, "kernel": "k",
         "latency_us": lat, "latency_p25_us": lat - 1, "latency_p75_us": lat + 1,
         "latency_min_us": lat - 2, "n_samples": n, "timer": "t", "correct": True,
         "max_abs_err": 0.0, "baseline_suspect": sus}
        for name, lat, n, sus in [("qkv", 10.0, 5, False), ("o", 20.0, 7, True)]
    ]  # fmt: skip
    total = kg.total_row(rows)
    assert total["layer"] == "total" and total["latency_us"] == 30.0
    assert total["latency_p25_us"] == 28.0 and total["n_samples"] == 5
    assert total["baseline_suspect"] is True and total["correct"] is True
    assert total["tops"] == pytest.approx(2 * 2 * (4 * 2 * 3) / 30e-6 / 1e12)


def test_model_mode_runs_four_layers_plus_total(ctx, monkeypatch):
    models = pytest.importorskip("slidesparse.core.models")

    tiny = SimpleNamespace(
        layers={"qkv": (96, 64), "o": (64, 64), "gate_up": (128, 64), "down": (64, 128)}
    )
    monkeypatch.setattr(models, "get_model", lambda name: tiny)
    rows = get_task("kernel-gemm").fn(
        {"mode": "model", "model": "tiny", "M": 32, "dtype": "fp8", "sparsity": "2_6"}, ctx
    )
    assert [r["layer"] for r in rows] == ["qkv", "o", "gate_up", "down", "total"]
    assert rows[-1]["latency_us"] == pytest.approx(sum(r["latency_us"] for r in rows[:4]))
    assert all(r["correct"] for r in rows)
    one = get_task("kernel-gemm").fn(
        {"mode": "model", "model": "tiny", "layer": "down", "M": 32, "dtype": "fp8"}, ctx
    )
    assert len(one) == 1 and (one[0]["N"], one[0]["K"]) == (64, 128)
    with pytest.raises(UserError, match="layer"):
        get_task("kernel-gemm").fn(
            {"mode": "model", "model": "tiny", "layer": "mlp", "M": 32, "dtype": "fp8"}, ctx
        )


def test_cpu_ref_on_a_gpu_worker_runs_and_times_on_the_cpu(tmp_path):
    """A GPU worker (ctx.device == "cuda") still runs cpu-ref on the CPU with perf_counter."""
    gpu_ctx = TaskContext(device="cuda", gpu_tag="H200_cc90_py312_cu130_x86_64", cache_dir=tmp_path)
    (row,) = _run(gpu_ctx, backend="cpu-ref", sparsity="2_8")
    assert row["timer"] == "perf_counter" and row["correct"] is True
    assert row["latency_us"] > 1.0
