"""The kernel-gemm task on the CPU (cpu-ref backend): rows, memo reuse, verdicts, totals."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from slidesparse.core import metrics, timing
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
    sparse = [a for a in calls if not a[3].is_dense]
    assert len(sparse) == 1
    _run(ctx, sparsity="2_10", M=64)
    sparse = [a for a in calls if not a[3].is_dense]
    assert len(sparse) == 2
    # The dense baseline each sparse cell measured itself: one weight for the shape, too.
    assert sum(a[3].is_dense for a in calls) == 1


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


def _pair_with_ratio(ratio: float):
    """A stand-in for timing.time_pair whose every round has speedup ``ratio``."""

    def time_pair(fn_a, fn_b, device, policy, **_kw):
        fn_a(), fn_b()
        a = timing.Timing((10.0 * ratio,) * 6, timing.TIMER_CPU, policy.target)
        b = timing.Timing((10.0,) * 6, timing.TIMER_CPU, policy.target)
        return timing.Pair(a, b, (ratio,) * 6)

    return time_pair


def test_sparse_row_beating_the_bound_is_suspect(ctx, monkeypatch):
    _run(ctx, sparsity="dense")
    monkeypatch.setattr(timing, "time_pair", _pair_with_ratio(2.0))  # an absurd 2x for 2_8
    (row,) = _run(ctx, sparsity="2_8")
    assert row["baseline_suspect"] is True
    assert row["extra"]["speedup_vs_dense"] == 2.0 > 8 / 6 * metrics.SUSPECT_MARGIN
    monkeypatch.setattr(timing, "time_pair", _pair_with_ratio(1.2))
    (row,) = _run(ctx, sparsity="2_8")
    assert row["baseline_suspect"] is False and row["latency_us"] == 10.0


def test_sparse_cell_is_timed_interleaved_with_the_strongest_dense_call(ctx, monkeypatch):
    adaptive, paired = [], []
    real_adaptive, real_pair = timing.time_adaptive, timing.time_pair
    monkeypatch.setattr(
        timing, "time_adaptive", lambda *a, **k: adaptive.append(a) or real_adaptive(*a, **k)
    )
    monkeypatch.setattr(timing, "time_pair", lambda *a, **k: paired.append(a) or real_pair(*a, **k))
    (dense,) = _run(ctx, sparsity="dense")
    assert dense["baseline_suspect"] is False and len(adaptive) == 1 and not paired
    # The memo keeps a recipe, not operands: a GPU's memory stays with the LRUs.
    (recipe,) = ctx.memo["kernel-gemm.dense"].values()
    assert recipe == {"backend": "cpu-ref", "config": {}, "seed": 0,
                      "latency_us": dense["latency_us"]}  # fmt: skip
    (row,) = _run(ctx, sparsity="2_8")
    assert len(adaptive) == 1 and len(paired) == 1
    # The dense side of the pair is the dense cell's call: the product of its unpruned weight.
    x = next(iter(ctx.memo["kernel-gemm.inputs"].values()))
    w = next(v[0] for k, v in ctx.memo["kernel-gemm.weights"].items() if k[3] == "dense")
    want = (x.double() @ w.double().T).round().to(torch.int32)
    assert torch.equal(paired[0][0](), want)
    e = row["extra"]
    assert e["dense_backend"] == "cpu-ref" and e["dense_latency_us"] > 0
    assert e["speedup_lo"] <= e["speedup_vs_dense"] <= e["speedup_hi"]
    assert e["speedup_spread"] >= 0 and e["target_spread"] == timing.DEFAULT_TARGET
    assert row["n_samples"] >= 5 and isinstance(row["spread_met"], bool)
    assert row["baseline_suspect"] == metrics.is_suspect(e["speedup_vs_dense"], "2_8")
    # Another shape has no dense cell in this worker (another shard or an earlier run ran
    # it): the sparse cell measures the dense baseline itself, then pairs with it.
    (other,) = _run(ctx, sparsity="2_8", M=32)
    assert len(adaptive) == 2 and len(paired) == 2 and "speedup_vs_dense" in other["extra"]
    assert (32, 128, 192) in {k[3:] for k in ctx.memo["kernel-gemm.dense"]}


def test_rows_record_the_spread_reached_against_the_cells_target(ctx):
    (row,) = _run(dataclasses.replace(ctx, target_spread=0.5), sparsity="dense")
    assert row["extra"]["target_spread"] == 0.5
    assert row["spread_met"] == (row["latency_spread"] <= 0.5)
    assert row["n_samples"] >= 5


def test_sparse_row_without_any_dense_baseline_has_unknown_suspect(ctx, monkeypatch):
    monkeypatch.setitem(kg._BASELINES, "cpu", ())  # no dense GEMM can run here
    (row,) = _run(ctx, sparsity="2_4")
    assert row["baseline_suspect"] is None and "speedup_vs_dense" not in row["extra"]
    # Tried once per shape: the next cell does not search for a baseline again.
    assert len(ctx.memo["kernel-gemm.baselines-tried"]) == 1


def test_total_row_sums_layers():
    rows = [
        {"model": "m", "mode": "model", "dtype": "int8", "out_dtype": "int32", "backend": "b",
         "sparsity": "2_8", "layer": name, "M": 4, "N": 2, "K": 3, "kernel": "k",
         "latency_us": lat, "latency_p25_us": lat - 1, "latency_p75_us": lat + 1,
         "latency_min_us": lat - 2, "n_samples": n, "timer": "t", "correct": True,
         "max_abs_err": 0.0, "baseline_suspect": sus, "latency_spread": spread,
         "spread_met": spread <= 0.01, "extra": {}}
        for name, lat, n, sus, spread in [("qkv", 10.0, 5, False, 0.01), ("o", 20.0, 7, True, 0.04)]
    ]  # fmt: skip
    total = metrics.total_row(rows)
    assert total["layer"] == "total" and total["latency_us"] == 30.0
    assert total["latency_p25_us"] == 28.0 and total["n_samples"] == 5
    # half-widths 0.1 + 0.8 µs over 30 µs; one layer missed its target, so the total did
    assert total["latency_spread"] == pytest.approx(0.9 / 30) and total["spread_met"] is False
    assert "speedup_vs_dense" not in total["extra"]
    assert total["baseline_suspect"] is True and total["correct"] is True
    assert total["tops"] == pytest.approx(2 * 2 * (4 * 2 * 3) / 30e-6 / 1e12)


def test_total_row_combines_paired_layer_speedups():
    def layer(name, dense_us, speedup, lo, hi):
        return {"model": "m", "mode": "model", "dtype": "int8", "out_dtype": "int32",
                "backend": "b", "sparsity": "2_8", "layer": name, "M": 4, "N": 2, "K": 3,
                "latency_us": dense_us / speedup, "latency_p25_us": 1.0, "latency_p75_us": 1.0,
                "latency_min_us": 1.0, "n_samples": 10, "timer": "t", "correct": True,
                "max_abs_err": 0.0, "latency_spread": 0.0, "spread_met": True,
                "extra": {"speedup_vs_dense": speedup, "speedup_lo": lo, "speedup_hi": hi,
                          "dense_latency_us": dense_us, "dense_backend": "cublaslt"}}  # fmt: skip

    rows = [layer("qkv", 30.0, 1.5, 1.4, 1.6), layer("o", 10.0, 1.0, 0.9, 1.1)]
    e = metrics.total_row(rows)["extra"]
    assert e["speedup_vs_dense"] == pytest.approx(40 / (30 / 1.5 + 10 / 1.0))
    assert e["speedup_lo"] == pytest.approx(40 / (30 / 1.4 + 10 / 0.9))
    assert e["speedup_hi"] == pytest.approx(40 / (30 / 1.6 + 10 / 1.1))
    assert e["dense_latency_us"] == 40.0 and e["dense_backend"] == "cublaslt"
    rows[1]["extra"]["dense_backend"] = "torch-builtin"  # two baselines: no common speedup
    assert "speedup_vs_dense" not in metrics.total_row(rows)["extra"]


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


def test_a_cutlass_baseline_is_never_built_inside_a_sparse_cell(ctx, monkeypatch):
    from slidesparse.native import cutlass

    def no_build():
        raise AssertionError("a sparse cell must not build the CUTLASS library")

    monkeypatch.setattr(cutlass, "load", no_build)
    monkeypatch.setattr(cutlass, "build", no_build)
    monkeypatch.setitem(kg._BASELINES, "cpu", ("cutlass", "cpu-ref"))
    (row,) = _run(ctx, sparsity="2_8")
    assert row["extra"]["dense_backend"] == "cpu-ref"
