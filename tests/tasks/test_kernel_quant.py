"""The kernel-quant and tune tasks: registration, parameter checking, CPU behaviour."""

import json
import os
import subprocess
import sys

import pytest
import torch

from slidesparse.core.errors import Unsupported, UserError
from slidesparse.core.sparsity import k_slide
from slidesparse.run.matrix import Cell, cell_id
from slidesparse.run.rules import load_rules, skip_reason
from slidesparse.tasks import TaskContext, get_task
from slidesparse.tasks.kernel_quant import case_from_params, fits_interpreter


def test_tasks_are_registered():
    # kernel-quant decides per cell (small cells run on CPU under the Triton interpreter).
    small = {"kernel": "quant_only", "M": 64, "K": 512}
    big = {"kernel": "quant_only", "M": 65536, "K": 3584}
    quant = get_task("kernel-quant")
    assert not quant.needs_gpu(small) and quant.needs_gpu(big)
    assert get_task("tune").needs_gpu(small)
    for name in ("kernel-quant", "tune"):
        assert get_task(name).default_timeout_s > 0


def test_only_small_cells_run_without_a_gpu(machine):
    small = {"kernel": "quant_slide", "sparsity": "2_8", "M": 64, "K": 520}
    big = {"kernel": "quant_only", "M": 1024, "K": 3584}
    assert fits_interpreter(small) and not fits_interpreter(big)
    assert fits_interpreter({"kernel": "dequant_bias", "M": 64, "N": 520})
    assert not fits_interpreter({"kernel": "dequant_bias", "M": 64, "K": 520})  # N missing
    cpu = machine("CPU")
    cells = [Cell("kernel-quant", p, cell_id("kernel-quant", p)) for p in (small, big)]
    reasons = [skip_reason(c, cpu, load_rules()) for c in cells]
    assert reasons == [None, "no CUDA device (too large for the Triton interpreter on CPU)"]


_CPU_CELL = """
import json, sys
from pathlib import Path
from slidesparse.tasks import TaskContext, get_task
ctx = TaskContext(device="cpu", gpu_tag="CPU", cache_dir=Path(sys.argv[1]))
rows = []
for p in json.loads(sys.argv[2]):
    rows += get_task("kernel-quant").fn(p, ctx)
print(json.dumps(rows))
"""


def test_a_small_cell_runs_on_cpu_under_the_interpreter(tmp_path):
    # A child process: TRITON_INTERPRET must be set before triton is first imported (the
    # runner's worker sets it for device "cpu").
    params = [
        {"kernel": "quant_slide", "sparsity": "2_8", "M": 20, "K": 520, "out_dtype": "fp8"},
        {"kernel": "quant_only", "M": 16, "K": 256},
        {"kernel": "dequant_bias", "M": 16, "N": 100},
    ]
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(
        [sys.executable, "-c", _CPU_CELL, str(tmp_path), json.dumps(params)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    ).stdout
    rows = json.loads(out.strip().splitlines()[-1])
    assert [r["kernel"] for r in rows] == ["quant_slide", "quant_only", "dequant_bias"]
    for r in rows:
        assert r["correct"] is True
        assert r["timer"] == "perf_counter(triton-interpreter)" and r["gbps"] is None
        assert r["n_samples"] >= 3 and r["latency_us"] > 0 and r["extra"]["interpreter"]
        assert r["latency_spread"] >= 0 and isinstance(r["spread_met"], bool)
    assert rows[0]["K_slide"] == k_slide(520, "2_8") and rows[0]["out_dtype"] == "fp8"


def test_params_become_cases_with_defaults():
    case = case_from_params({"kernel": "quant_slide", "sparsity": "6:8", "M": 16384, "K": 3584})
    assert (case.pattern, case.in_dtype, case.out_dtype) == ("2_8", "bf16", "int8")
    deq = case_from_params({"kernel": "dequant_bias", "M": 16, "N": 4608})
    assert (deq.size, deq.in_dtype, deq.out_dtype) == (4608, "int32", "bf16")
    spec = get_task("kernel-quant")
    assert spec.setup_key({"kernel": "quant_only", "M": 16, "K": 64}) != spec.setup_key(
        {"kernel": "quant_only", "M": 16, "K": 128}
    )


@pytest.mark.parametrize(
    "params,match",
    [
        ({"kernel": "gemm", "M": 1, "K": 1}, "kernel"),
        ({"kernel": "quant_only", "K": 64}, "needs params M and K"),
        ({"kernel": "dequant_bias", "M": 4, "K": 64}, "needs params M and N"),
        ({"kernel": "quant_only", "M": -3, "K": 64}, "positive integer"),
        ({"kernel": "quant_only", "M": 3, "K": 64, "out_dtype": "fp4"}, "output dtype"),
        ({"kernel": "quant_slide", "M": 3, "K": 64, "sparsity": "3_8"}, "sparsity"),
    ],
)
def test_bad_params_are_user_errors(params, match):
    with pytest.raises(UserError, match=match):
        case_from_params(params)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_without_a_gpu_large_cells_and_tuning_are_skipped(tmp_path):
    ctx = TaskContext(device="cpu", gpu_tag="CPU", cache_dir=tmp_path)
    with pytest.raises(Unsupported, match="too large for the Triton interpreter"):
        get_task("kernel-quant").fn({"kernel": "quant_only", "M": 1024, "K": 4096}, ctx)
    with pytest.raises(Unsupported, match="CUDA"):
        get_task("tune").fn({"kernel": "quant_only", "M": 16, "K": 64}, ctx)


def test_without_triton_a_cell_is_skipped_with_the_reason(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a)
    )
    ctx = TaskContext(device="cpu", gpu_tag="CPU_test", cache_dir=tmp_path)
    params = {"kernel": "quant_only", "M": 16, "K": 64}
    with pytest.raises(Unsupported, match="triton is not installed"):
        get_task("kernel-quant").fn(params, ctx)
