"""ops.py: schemas, typed wrappers and fake impls; opcheck of each tensor op on a GPU."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from slidesparse.native import ops


def test_every_op_has_schema_and_wrapper():
    for name, schema in ops.SCHEMAS.items():
        assert schema.startswith(f"{name}(")
        assert callable(getattr(ops, name)) and getattr(ops, name).__doc__
    assert set(ops.TENSOR_OPS) <= set(ops.SCHEMAS)


def test_fake_impls_give_output_shapes_without_cuda():
    ops._define()
    mm = torch.ops.slidesparse.cublaslt_mm.default
    slt = torch.ops.slidesparse.cusparselt_mm.default
    with FakeTensorMode():
        x = torch.empty(64, 96, dtype=torch.int8)
        w = torch.empty(32, 96, dtype=torch.int8)
        y = mm(x, w, torch.int32, 0, False)
        assert y.shape == (64, 32) and y.dtype == torch.int32
        c = torch.empty(1000, dtype=torch.uint8)
        z = slt(c, x, 48, torch.int8, torch.bfloat16, 0, 1, -1, 1)
        assert z.shape == (64, 48) and z.dtype == torch.bfloat16
        # FP4: packed pairs ([rows, K/2]) and block scales; the output is [M, N] all the same.
        x4 = torch.empty(64, 48, dtype=torch.float4_e2m1fn_x2)
        w4 = torch.empty(32, 48, dtype=torch.float4_e2m1fn_x2)
        xs = torch.empty(128 * 8, dtype=torch.float8_e4m3fn)
        ws = torch.empty(128 * 8, dtype=torch.float8_e4m3fn)
        y4 = mm(x4, w4, torch.bfloat16, 0, False, xs, ws, 1.0)
        assert y4.shape == (64, 32) and y4.dtype == torch.bfloat16
        z4 = slt(c, x4, 32, torch.float4_e2m1fn_x2, torch.bfloat16, 0, 1, -1, 0, ws, xs)
        assert z4.shape == (64, 32) and z4.dtype == torch.bfloat16


def test_fp4_arguments_are_optional_trailing_schema_args():
    # The other dtypes' calls keep their exact argument lists.
    assert (
        "Tensor? x_scale=None, Tensor? w_scale=None, float alpha=1.0" in ops.SCHEMAS["cublaslt_mm"]
    )
    for name in ("cusparselt_mm", "cusparselt_plan_info"):
        assert (
            ops.SCHEMAS[name]
            .split(") ->")[0]
            .endswith("Tensor? w_scale=None, Tensor? x_scale=None")
        )


def test_define_is_idempotent():
    ops._define()
    ops._define()
    assert hasattr(torch.ops.slidesparse, "cusparselt_mm")


# opcheck's test_schema compares inputs before and after the call with arithmetic that torch
# 2.11 does not implement for float8 on CUDA ('"mul_cuda" not implemented for
# Float8_e4m3fn', H200, every layout): FP8 runs every other opcheck utility.
_ALL_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor",
              "test_aot_dispatch_dynamic")  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("layout", [0, 1, 2, 3])
@pytest.mark.parametrize(
    "dtype",
    [
        torch.float16,
        torch.bfloat16,
        torch.int8,
        torch.float8_e4m3fn,
    ],
)
def test_opcheck_each_tensor_op(dtype, layout):
    from slidesparse.core import sparsity

    ops.ensure_loaded()
    utils = _ALL_UTILS[1:] if dtype == torch.float8_e4m3fn else _ALL_UTILS
    out = {torch.int8: torch.int32, torch.float8_e4m3fn: torch.bfloat16}.get(dtype, dtype)
    x = torch.randint(-3, 4, (64, 128), device="cuda").to(dtype)
    w = torch.randint(-3, 4, (96, 128), device="cuda").to(dtype)
    sep = dtype == torch.float8_e4m3fn
    torch.library.opcheck(
        torch.ops.slidesparse.cublaslt_mm.default, (x, w, out, 0, sep), test_utils=utils
    )
    w24 = sparsity.prune(w.float(), "2_4").to(dtype)
    # The compressed size is data-dependent for the fake impl: schema-level checks only.
    torch.library.opcheck(
        torch.ops.slidesparse.cusparselt_compress.default,
        (w24.contiguous(), layout & 1),
        test_utils=tuple(u for u in utils if u in ("test_schema", "test_autograd_registration")),
    )
    c = ops.cusparselt_compress(w24.contiguous(), layout & 1)
    torch.library.opcheck(
        torch.ops.slidesparse.cusparselt_mm.default,
        (c, x, 96, dtype, out, 0, 1, -1, layout),
        test_utils=utils,
    )
