"""Timing statistics and operand generation / checking."""

from __future__ import annotations

import pytest
import torch

from slidesparse.core import timing
from slidesparse.core.sparsity import check_pattern, parse_pattern
from slidesparse.gemm import operands


def test_summarize_gives_quantiles():
    s = timing.summarize(timing.Timing((4.0, 1.0, 3.0, 2.0, 5.0), "perf_counter"))
    assert s["latency_us"] == 3.0 and s["latency_min_us"] == 1.0
    assert s["latency_p25_us"] == 2.0 and s["latency_p75_us"] == 4.0
    assert s["n_samples"] == 5 and s["timer"] == "perf_counter"


def test_time_cpu_counts_calls():
    calls = []
    t = timing.time_cpu(lambda: calls.append(1), repeats=7, warmup=2)
    assert len(calls) == 9 and len(t.samples_us) == 7 and t.timer == timing.TIMER_CPU


def test_repeats_for_is_bounded():
    assert timing.repeats_for(1000.0, budget_us=10_000, lo=3, hi=50) == 10
    assert timing.repeats_for(1e9, budget_us=10_000, lo=3, hi=50) == 3
    assert timing.repeats_for(0.0, budget_us=10_000, lo=3, hi=50) == 50


@pytest.mark.parametrize("dtype", ["int8", "fp8", "fp16", "bf16", "fp4"])
def test_values_are_exact_in_their_dtype(dtype):
    v = operands.random_values((64, 96), dtype, seed=3)
    assert v.dtype == torch.float32
    if dtype == "int8":
        assert torch.equal(v, v.round()) and v.abs().max() <= 127
    elif dtype == "fp4":
        assert set(v.abs().unique().tolist()) <= {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0}
    else:
        storage = {"fp8": torch.float8_e4m3fn, "fp16": torch.float16, "bf16": torch.bfloat16}
        assert torch.equal(v.to(storage[dtype]).float(), v)
    assert torch.equal(v, operands.random_values((64, 96), dtype, seed=3))


def test_pruned_weight_follows_pattern_and_dense_is_untouched():
    w = operands.pruned_weight(32, 100, "int8", parse_pattern("2_8"), seed=0)
    assert check_pattern(w, "2_8") and not check_pattern(w, "2_6")
    d = operands.pruned_weight(32, 100, "int8", parse_pattern("2_inf"), seed=0)
    assert torch.equal(d, operands.random_values((32, 100), "int8", seed=0))


def test_check_rows_cover_edges():
    assert operands.check_rows(10) == list(range(10))
    rows = operands.check_rows(16384, limit=64)
    assert rows[0] == 0 and rows[-1] == 16383 and len(rows) == 64


def test_compare_exact_int32_and_relative_bf16():
    x = operands.random_values((8, 64), "int8", seed=1)
    w = operands.random_values((16, 64), "int8", seed=2)
    rows = list(range(8))
    ref, abs_ref = operands.reference(x, w, rows)
    assert torch.equal(abs_ref, x.abs().double() @ w.abs().double().T)
    exact = (x @ w.T).to(torch.int32)
    assert operands.compare(exact, ref, rows, "int32") == (True, 0.0)
    off = exact.clone()
    off[3, 5] += 1
    ok, err = operands.compare(off, ref, rows, "int32")
    assert not ok and err == 1.0
    assert operands.compare((x @ w.T).bfloat16(), ref, rows, "bf16")[0]
    assert not operands.compare((x @ w.T * 1.05).bfloat16(), ref, rows, "bf16")[0]


def test_compare_rejects_wrong_shape_and_nan():
    ref = torch.zeros(2, 3, dtype=torch.float64)
    assert operands.compare(torch.zeros(2, 4), ref, [0, 1], "fp32")[0] is False
    bad = torch.zeros(2, 3)
    bad[0, 0] = float("nan")
    assert operands.compare(bad, ref, [0, 1], "fp32")[0] is False


def test_accumulation_allowance_scales_with_abs_sum():
    ref = torch.tensor([[1000.0]], dtype=torch.float64)
    abs_ref = torch.tensor([[200_000.0]], dtype=torch.float64)
    out = torch.tensor([[1100.0]])  # 10% off: beyond bf16 rounding
    assert not operands.compare(out, ref, [0], "bf16")[0]
    # 2^-10 of sum|x·w| (~195) covers FP8's reduced-precision accumulation ...
    assert operands.compare(out, ref, [0], "bf16", abs_ref, operands.ACC_EPS["fp8"])[0]
    # ... but not an error of the size of the result itself (a wrong index or layout).
    assert not operands.compare(out * 2, ref, [0], "bf16", abs_ref, operands.ACC_EPS["fp8"])[0]
    assert operands.ACC_EPS["int8"] == 0.0
