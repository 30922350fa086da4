"""cpu-ref: the slide path reproduces the dense product for every pattern and dtype."""

from __future__ import annotations

import pytest
import torch

from slidesparse import gemm
from slidesparse.core import dtypes
from slidesparse.core.sparsity import ALL_PATTERNS, k_slide, parse_pattern
from slidesparse.gemm import operands


@pytest.mark.parametrize("pattern", ALL_PATTERNS)
@pytest.mark.parametrize("dtype", ["int8", "fp8", "bf16"])
def test_cpu_ref_matches_dense_reference(pattern, dtype):
    p = parse_pattern(pattern)
    N, K, M = 48, 200, 24  # K not a multiple of L: exercises group padding
    backend = gemm.make_backend(gemm.get_spec("cpu-ref"), "cpu", p)
    w_values = operands.pruned_weight(N, K, dtype, p, seed=5)
    x_values = operands.random_values((M, K), dtype, seed=6)
    out_dtype = dtypes.DEFAULT_OUT_DTYPE[dtype]
    w = backend.prepare_weight(w_values, p, dtype, out_dtype)
    assert w.K_slide == k_slide(K, p)
    inp = backend.prepare_input(x_values, w)
    assert inp.shape == (M, w.K_slide)
    y = backend.make_call(w, inp, {})()
    rows = list(range(M))
    ref, abs_ref = operands.reference(x_values, w_values, rows)
    ok, err = operands.compare(y, ref, rows, out_dtype, abs_ref, operands.ACC_EPS[dtype])
    assert ok, err
    if dtype == "int8":
        assert y.dtype == torch.int32 and err == 0.0


def test_cpu_ref_kernel_names_the_path():
    dense = gemm.make_backend(gemm.get_spec("cpu-ref"), "cpu", parse_pattern("dense"))
    w = dense.prepare_weight(torch.ones(4, 8), parse_pattern("dense"), "int8", "int32")
    assert dense.describe(w, {})["kernel"] == "torch.cpu.mm[fp64,dense]"
