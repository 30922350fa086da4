"""The kernel-quant and tune tasks: registration, parameter checking, CPU behaviour."""

import pytest
import torch

from slidesparse.errors import Unsupported, UserError
from slidesparse.tasks import TaskContext, get_task
from slidesparse.tasks.kernel_quant import case_from_params


def test_tasks_are_registered_as_gpu_tasks():
    for name in ("kernel-quant", "tune"):
        spec = get_task(name)
        assert spec.needs_gpu and spec.default_timeout_s > 0


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
def test_without_a_gpu_the_cell_is_skipped(tmp_path):
    ctx = TaskContext(device="cpu", gpu_tag="CPU", cache_dir=tmp_path)
    with pytest.raises(Unsupported, match="CUDA"):
        get_task("kernel-quant").fn({"kernel": "quant_only", "M": 16, "K": 64}, ctx)
    with pytest.raises(Unsupported, match="CUDA"):
        get_task("tune").fn({"kernel": "quant_only", "M": 16, "K": 64}, ctx)
