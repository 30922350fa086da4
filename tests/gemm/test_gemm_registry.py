"""Backend registry: metadata, unsupported reasons, fallback selection."""

from __future__ import annotations

import pytest

from slidesparse import gemm
from slidesparse.core.errors import Unsupported, UserError
from slidesparse.core.sparsity import parse_pattern


def test_every_backend_registers_with_metadata():
    specs = {n: gemm.get_spec(n) for n in gemm.backend_names()}
    assert set(specs) == {
        "cpu-ref", "torch-builtin", "torch-cslt", "cublaslt", "cusparselt", "cutlass",
        "cutlass-sparse",
    }  # fmt: skip
    assert specs["cublaslt"].baseline and specs["cublaslt"].sparse is False
    assert specs["cusparselt"].sparse is True and not specs["cusparselt"].baseline
    assert specs["cpu-ref"].needs_cuda is False and specs["cpu-ref"].sparse is None
    assert specs["cublaslt"].fallback == "torch-builtin"
    assert specs["cusparselt"].fallback == "torch-cslt"
    assert set(gemm.baseline_names()) == {"cpu-ref", "torch-builtin", "cublaslt", "cutlass"}
    for name in ("cutlass", "cutlass-sparse"):
        assert specs[name].needs_cutlass and specs[name].dtypes == ("int8", "fp8"), name
        # The span of the library's targets; the library names the gaps (sm103, INT8 on sm120).
        assert (specs[name].min_cc, specs[name].max_cc) == ((9, 0), (12, 1)), name
    for name, spec in specs.items():  # the registered class is that backend, and writes
        for p in ("dense", "2_8"):
            cls = spec.cls.for_pattern("cpu", parse_pattern(p)) if name == "cpu-ref" else spec.cls
            assert cls.name == name and cls.out_dtypes, name


def test_cutlass_reasons_name_the_gpu_and_the_library():
    spec = gemm.get_spec("cutlass-sparse")
    assert gemm.unsupported_reason(spec, "fp8", device="cpu", cc=None) == "no CUDA device"
    assert "needs compute capability >= (9, 0)" in gemm.unsupported_reason(
        spec, "fp8", device="cuda", cc=(8, 9)
    )
    assert "built for compute capability <= (12, 1) only" in gemm.unsupported_reason(
        spec, "int8", device="cuda", cc=(13, 0)
    )
    from slidesparse.native import cutlass

    # Inside the span, a cc no target serves, or a dtype its target lacks, is the library's.
    for cc, dtype, want in (((10, 3), "fp8", "this GPU is cc 10.3"),
                            ((12, 0), "int8", "sm120a builders make no int8")):  # fmt: skip
        err = cutlass.unsupported_reason(cc, dtype)
        why = gemm.unsupported_reason(spec, dtype, device="cuda", cc=cc, cutlass_error=err)
        assert why.startswith("CUTLASS library unavailable") and want in why, why
    assert "does not implement fp16" in gemm.unsupported_reason(
        spec, "fp16", device="cuda", cc=(9, 0)
    )
    why = gemm.unsupported_reason(
        spec, "int8", device="cuda", cc=(9, 0), cutlass_error="UserError: nvcc not found"
    )
    assert why == "CUTLASS library unavailable: UserError: nvcc not found"
    assert gemm.unsupported_reason(spec, "int8", device="cuda", cc=(9, 0)) is None


def test_a_cutlass_cell_without_out_dtype_writes_bf16():
    from slidesparse.tasks.kernel_gemm import default_out_dtype

    assert default_out_dtype("cutlass", "int8") == "bf16"
    assert default_out_dtype("cutlass-sparse", "fp8") == "bf16"
    assert default_out_dtype("cublaslt", "int8") == "int32"
    assert default_out_dtype("cpu-ref", "int8") == "int32"


def test_registering_a_class_that_is_not_the_backend_fails_at_import():
    from slidesparse.gemm.base import GemmBackend

    class Base(GemmBackend):
        pass

    with pytest.raises(TypeError, match="must set name='x9'"):
        gemm.register_backend("x9", sparse=False)(Base)
    assert "x9" not in gemm.backend_names()


def test_unknown_backend_and_dtype_are_user_errors():
    with pytest.raises(UserError, match="valid backends"):
        gemm.get_spec("cutlass9")
    with pytest.raises(UserError, match="valid dtypes"):
        gemm.check_dtype("int4")


def test_gpu_backend_without_cuda_is_unsupported():
    with pytest.raises(Unsupported, match="no CUDA device"):
        gemm.select_backend("cusparselt", "int8", device="cpu", cc=None)


def test_dtype_not_on_this_cc_names_the_cc():
    spec = gemm.get_spec("cublaslt")
    reason = gemm.unsupported_reason(
        spec, "fp8", device="cuda", cc=(8, 0), dtype_ok_on_cc=lambda d, s: d != "fp8"
    )
    assert reason == "no dense fp8 GEMM on compute capability 8.0"


def test_fp4_is_implemented_and_gated_by_cc():
    from slidesparse.core.hardware import capabilities

    for name, kind in (("cublaslt", "dense"), ("cusparselt", "2:4 sparse")):
        spec = gemm.get_spec(name)
        assert "fp4" in spec.dtypes
        ok = capabilities((10, 0)).supports
        assert (
            gemm.unsupported_reason(spec, "fp4", device="cuda", cc=(10, 0), dtype_ok_on_cc=ok)
            is None
        )
        reason = gemm.unsupported_reason(
            spec, "fp4", device="cuda", cc=(9, 0), dtype_ok_on_cc=capabilities((9, 0)).supports
        )
        assert reason.startswith(f"no {kind} fp4 GEMM on compute capability 9.0")
    # The torch built-ins have no FP4 path: a missing extension cannot fall back for fp4.
    with pytest.raises(Unsupported, match="does not implement fp4"):
        gemm.select_backend("cublaslt", "fp4", device="cuda", cc=(10, 0), extension_error="x")


def test_min_cc_is_enforced():
    spec = gemm.get_spec("cusparselt")
    assert "compute capability" in gemm.unsupported_reason(spec, "fp16", device="cuda", cc=(7, 5))


def test_missing_extension_falls_back_under_its_own_name():
    spec = gemm.select_backend(
        "cusparselt", "int8", device="cuda", cc=(9, 0), extension_error="nvcc missing"
    )
    assert spec.name == "torch-cslt"
    spec = gemm.select_backend("cublaslt", "fp8", device="cuda", cc=(9, 0), extension_error="x")
    assert spec.name == "torch-builtin"


def test_dtype_verdict_comes_before_the_extension():
    # A GPU without 2:4 INT8 must not be reported as "extension missing".
    with pytest.raises(Unsupported, match="no 2:4 sparse int8 GEMM"):
        gemm.select_backend(
            "cusparselt", "int8", device="cuda", cc=(9, 0), extension_error="no headers",
            dtype_ok_on_cc=lambda d, s: not s,
        )  # fmt: skip


def test_pattern_backend_mismatch_is_unsupported():
    with pytest.raises(Unsupported, match="sparse backend"):
        gemm.make_backend(gemm.get_spec("cublaslt"), "cuda", parse_pattern("2_8"))
    with pytest.raises(Unsupported, match="sparse patterns only"):
        gemm.make_backend(gemm.get_spec("torch-cslt"), "cuda", parse_pattern("dense"))


def test_cpu_ref_picks_path_by_pattern():
    spec = gemm.get_spec("cpu-ref")
    assert gemm.make_backend(spec, "cpu", parse_pattern("dense")).sparse is False
    assert gemm.make_backend(spec, "cpu", parse_pattern("6:8")).sparse is True


def test_register_rejects_unknown_dtypes():
    with pytest.raises(ValueError, match="unknown dtypes"):
        gemm.register_backend("x", sparse=False, dtypes=("int3",))
