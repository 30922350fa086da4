"""FP4 (E2M1, block-scaled): quantize, pack, scale layout, paired slide, gating; GPU cells."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slidesparse import gemm
from slidesparse.core.errors import Unsupported
from slidesparse.core.hardware import capabilities
from slidesparse.core.sparsity import ALL_SPARSE, check_pattern, parse_pattern
from slidesparse.gemm import csrc_backends, fp4

GRID = fp4.E2M1_VALUES


# --- E2M1 codes ---------------------------------------------------------------------------


def test_every_code_decodes_and_encodes_back():
    codes = torch.arange(16, dtype=torch.uint8)
    values = fp4.decode_e2m1(codes)
    assert values[:8].tolist() == list(GRID) and values[9:].tolist() == [-v for v in GRID[1:]]
    back = fp4.encode_e2m1(values)
    keep = torch.arange(16) != 8  # -0 encodes as +0: both are zero
    assert torch.equal(back[keep], codes[keep]) and back[8] == 0


def test_rounding_is_nearest_ties_to_even_and_saturates():
    v = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.3, 5.1, 7.0, -9.0])
    want = [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 0.5, 6.0, 6.0, -6.0]
    assert fp4.decode_e2m1(fp4.encode_e2m1(v)).tolist() == want


# --- quantize / dequantize ------------------------------------------------------------------

_magnitudes = st.floats(min_value=0.125, max_value=2000.0, allow_nan=False)
_signed = st.tuples(_magnitudes, st.booleans()).map(lambda t: -t[0] if t[1] else t[0])


@settings(max_examples=60, deadline=None)
@given(
    block=st.sampled_from([fp4.CUBLASLT_BLOCK, fp4.CUSPARSELT_BLOCK]),
    data=st.data(),
)
def test_round_trip_error_is_bounded_per_block(block, data):
    rows = data.draw(st.integers(1, 3))
    nblk = data.draw(st.integers(1, 3))
    vals = data.draw(st.lists(_signed, min_size=rows * nblk * block, max_size=rows * nblk * block))
    x = torch.tensor(vals, dtype=torch.float32).reshape(rows, nblk * block)
    q = fp4.quantize(x, block)
    err = (q.dequantize() - x).abs().reshape(rows, nblk, block)
    amax = x.abs().reshape(rows, nblk, block).amax(-1, keepdim=True)
    # |x/s - code| <= 1 (half of E2M1's widest gap, or the saturation past a scale rounded
    # down by at most 2^-4), so the error is at most one scale step: amax/6 · (1 + 2^-4).
    assert bool((err <= amax / 6 * (1 + 2.0**-4) * (1 + 1e-6)).all())


@settings(max_examples=60, deadline=None)
@given(
    idx=st.lists(st.integers(0, 15), min_size=16, max_size=16),
    where_max=st.integers(0, 15),
    exp=st.integers(-6, 8),
)
def test_grid_values_times_power_of_two_are_exact(idx, where_max, exp):
    codes = torch.tensor(idx, dtype=torch.uint8)
    codes[where_max] = 7  # the block's amax is 6·2^exp, so its scale 2^exp is exact in E4M3
    x = (fp4.decode_e2m1(codes) * 2.0**exp).reshape(1, 16)
    q = fp4.quantize(x, 16)
    assert float(q.scales.float()) == 2.0**exp
    assert torch.equal(q.dequantize(), x)


def test_global_scale_divides_first_and_multiplies_back():
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(0)) * 1e4  # amax/6 >> 448
    g = fp4.global_scale(x)
    q = fp4.quantize(x, 16, global_scale=g)
    # The largest block scale lands on E4M3's maximum: the whole range is in use.
    assert float(q.scales.float().max()) == fp4.E4M3_MAX
    assert torch.equal(q.dequantize(), fp4.quantize(x / g, 16).dequantize() * g)
    amax = x.abs().reshape(4, 2, 16).amax(-1, keepdim=True)
    err = (q.dequantize() - x).abs().reshape(4, 2, 16)
    assert bool((err <= amax / 6 * (1 + 2.0**-4) * (1 + 1e-5)).all())


def test_all_zero_block_has_zero_scale_and_codes():
    q = fp4.quantize(torch.zeros(2, 32), 16)
    assert q.scales.float().abs().sum() == 0 and int(q.codes.sum()) == 0


# --- packing and the tiled scale layout ----------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 5), half_k=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_pack_unpack_round_trip(rows, half_k, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (rows, 2 * half_k), generator=g, dtype=torch.uint8)
    packed = fp4.as_fp4x2(fp4.pack(codes))
    assert packed.dtype == torch.float4_e2m1fn_x2 and packed.shape == (rows, half_k)
    assert torch.equal(fp4.unpack(packed), codes)


def test_even_index_is_the_low_nibble():
    assert fp4.pack(torch.tensor([[1, 2]], dtype=torch.uint8)).tolist() == [[0x21]]


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 300), cols=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_swizzle_unswizzle_inverse(rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 127, (rows, cols), generator=g, dtype=torch.uint8).view(
        torch.float8_e4m3fn
    )
    flat = fp4.swizzle(s)
    assert flat.numel() == fp4.swizzled_size(rows, cols) and flat.dtype == torch.float8_e4m3fn
    assert torch.equal(fp4.unswizzle(flat, rows, cols).view(torch.uint8), s.view(torch.uint8))


def test_swizzle_offsets_match_nvidias_worked_example():
    # cuBLAS's documented NVFP4 example: A of 128 x 128 (8 scale columns); the block of
    # row 5, K-group 2 sits at offset 82 and row 5, K-group 5 at 593.
    assert fp4.swizzle_offset(5, 2, 8) == 82
    assert fp4.swizzle_offset(5, 5, 8) == 593
    # Row 130 is row 2 of the second row tile, which follows the first row's two K tiles.
    assert fp4.swizzle_offset(130, 0, 8) == 2 * 512 + 2 * 16
    s = torch.arange(256 * 8, dtype=torch.float32).reshape(256, 8)
    flat = fp4.swizzle(s)
    for r, c in ((5, 2), (5, 5), (130, 0), (255, 7), (37, 3)):
        assert flat[fp4.swizzle_offset(r, c, 8)] == s[r, c]


# --- the paired slide path (cuSPARSELt's E2M1 structure) -----------------------------------


@pytest.mark.parametrize("pattern", ALL_SPARSE)
@pytest.mark.parametrize("K", [96, 100, 101])
def test_pair_slide_is_exact_and_paired_4to8(pattern, K):
    g = torch.Generator().manual_seed(K)
    w = torch.randint(-7, 8, (24, K), generator=g).float()
    x = torch.randint(-7, 8, (5, K), generator=g).float()
    wp = fp4.prune_pairs(w, pattern)
    p = parse_pattern(pattern)
    if p.L is not None:  # at least 2 zero pairs in every L pairs
        pairs_nz = (fp4._pairs(wp) != 0).any(-1).float()
        assert check_pattern(pairs_nz, pattern)
    ws = fp4.slide_pairs(wp, pattern)
    xl = fp4.lift_pairs(x, pattern)
    assert ws.shape == (24, fp4.pair_k_slide(K, pattern)) and xl.shape[-1] == ws.shape[-1]
    assert ws.shape[-1] % 64 == 0
    assert fp4.check_paired_4to8(ws)
    assert torch.equal(xl @ ws.T, x @ wp.T)


def test_paired_check_rejects_three_pairs_in_eight():
    w = torch.tensor([[1.0, 0, 1, 0, 1, 0, 0, 0]])
    assert not fp4.check_paired_4to8(w)
    assert fp4.check_paired_4to8(torch.tensor([[1.0, 1, 0, 0, 0, 0, 1, 1]]))


# --- backends: capability gate and operand preparation (CPU) -------------------------------


def test_gate_wording_below_cc_10():
    assert (
        csrc_backends.fp4_unsupported_reason((9, 0), sparse=False)
        == "no dense fp4 GEMM on cc 9.0 (needs cc >= 10.0)"
    )
    assert (
        csrc_backends.fp4_unsupported_reason((9, 0), sparse=True)
        == "no 2:4 sparse fp4 GEMM on cc 9.0 (needs cc >= 10.0)"
    )
    for cc in ((10, 0), (12, 0)):
        assert csrc_backends.fp4_unsupported_reason(cc, sparse=True) is None


@pytest.mark.parametrize("name,sparse", [("cublaslt", False), ("cusparselt", True)])
def test_registry_accepts_fp4_on_cc10_only(name, sparse):
    ok10 = capabilities((10, 0)).supports
    assert gemm.select_backend(
        name, "fp4", device="cuda", cc=(10, 0), dtype_ok_on_cc=ok10
    ).name == name  # fmt: skip
    with pytest.raises(Unsupported, match=f"no {'2:4 sparse' if sparse else 'dense'} fp4 GEMM"):
        gemm.select_backend(
            name, "fp4", device="cuda", cc=(9, 0), dtype_ok_on_cc=capabilities((9, 0)).supports
        )


@pytest.mark.parametrize("cls,sparse", [(csrc_backends.CublasLt, False),
                                        (csrc_backends.CusparseLt, True)])  # fmt: skip
def test_backend_gate_uses_the_matrix_wording(monkeypatch, cls, sparse):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    kind = "2:4 sparse" if sparse else "dense"
    with pytest.raises(Unsupported) as exc:
        cls("cuda").check_out_dtype("fp4", "bf16")
    assert exc.value.reason == f"no {kind} fp4 GEMM on cc 9.0 (needs cc >= 10.0)"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (10, 0))
    cls("cuda").check_out_dtype("fp4", "bf16")
    with pytest.raises(Unsupported, match="cannot write fp16 from fp4"):
        cls("cuda").check_out_dtype("fp4", "fp16")


def _library_view(op: fp4.Operand, rows: int) -> torch.Tensor:
    """What a kernel reads: nibbles (even index low) times the scale found by the tiled offset."""
    codes = fp4.unpack(op.packed)
    cols = codes.shape[1] // op.block
    raw = op.scale.view(torch.uint8)
    idx = torch.tensor([[fp4.swizzle_offset(r, c, cols) for c in range(cols)] for r in range(rows)])
    scales = raw[idx].view(torch.float8_e4m3fn).float().repeat_interleave(op.block, dim=1)
    return fp4.decode_e2m1(codes) * scales


def test_dense_fp4_operands_match_their_reference(monkeypatch):
    from slidesparse.gemm import operands

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (10, 0))
    be = csrc_backends.CublasLt("cuda")
    dense = parse_pattern("dense")
    w_values = operands.random_values((40, 100), "fp4", seed=1) * torch.linspace(0.1, 3, 100)
    x_values = operands.random_values((7, 100), "fp4", seed=2)
    w = be.prepare_weight(w_values, dense, "fp4", "bf16")
    x = be.prepare_input(x_values, w)
    assert w.data.packed.shape == (40, 64) and w.data.packed.dtype == torch.float4_e2m1fn_x2
    assert w.data.scale.numel() == fp4.swizzled_size(40, 128 // 16)
    rows = [0, 3, 6]
    ref, _ = be.reference(w, x, rows)
    w_lib, x_lib = _library_view(w.data, 40), _library_view(x, 7)
    assert torch.equal(ref, x_lib[rows].double() @ w_lib.double().T)
    # The column ramp gives blocks non-unit scales: quantization is not the identity here.
    assert not torch.equal(w.data.dequantized[:, :100].float(), w_values)
    assert be.reference(csrc_backends.PreparedWeight(1, 1, 1, "int8", "int32", dense, None),
                        None, rows) is None  # fmt: skip


@pytest.mark.parametrize("pattern", ["2_4", "2_8", "2_inf"])
def test_sparse_fp4_operands_match_the_dense_product(monkeypatch, pattern):
    from slidesparse.gemm import operands

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (10, 0))
    be = csrc_backends.CusparseLt("cuda")
    p = parse_pattern(pattern)
    w_values = operands.pruned_weight(32, 200, "fp4", p, seed=3)
    w_pp = fp4.prune_pairs(w_values, p)
    op = fp4.prepare(fp4.slide_pairs(w_pp, p), fp4.CUSPARSELT_BLOCK, 64)
    w = csrc_backends.PreparedWeight(32, 200, op.k_values, "fp4", "bf16", p,
                                     csrc_backends.Fp4Sparse({}, op))  # fmt: skip
    assert fp4.check_paired_4to8(op.dequantized.float())
    x = be.prepare_input(operands.random_values((9, 200), "fp4", seed=4), w)
    assert x.k_values == w.K_slide and x.scale.numel() == fp4.swizzled_size(9, w.K_slide // 32)
    ref, _ = be.reference(w, x, list(range(9)))
    assert torch.equal(ref, _library_view(x, 9).double() @ _library_view(op, 32).double().T)


# --- GPU (cc >= 10.0): the kernels against the reference, and opcheck -----------------------


def _blackwell():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cc = torch.cuda.get_device_capability()
    if cc < (10, 0):
        pytest.skip(f"FP4 GEMMs need compute capability >= 10.0, this GPU is {cc[0]}.{cc[1]}")


_GPU_CELLS = [("cublaslt", "dense"), ("cusparselt", "2_4"), ("cusparselt", "2_8"),
              ("cusparselt", "2_inf")]  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("backend,pattern", _GPU_CELLS)
def test_gpu_fp4_cells_are_correct(tmp_path, backend, pattern):
    _blackwell()
    from slidesparse.tasks import TaskContext, get_task

    ctx = TaskContext(device="cuda", gpu_tag="gpu_test", cache_dir=tmp_path)
    params = {"mode": "square", "M": 256, "N": 512, "K": 1000, "dtype": "fp4",
              "backend": backend, "sparsity": pattern}  # fmt: skip
    (row,) = get_task("kernel-gemm").fn(params, ctx)
    assert row["backend"] == backend and row["correct"], row


@pytest.mark.gpu
def test_gpu_opcheck_fp4_ops():
    _blackwell()
    from slidesparse.native import ops

    ops.ensure_loaded()
    utils = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    g = torch.Generator().manual_seed(0)
    x = fp4.prepare(torch.randn(64, 256, generator=g), 16, 32)
    w = fp4.prepare(torch.randn(96, 256, generator=g), 16, 32)
    xs, ws = (t.to("cuda") for t in (x.scale, w.scale))
    args = (x.packed.cuda(), w.packed.cuda(), torch.bfloat16, 0, False, xs, ws, 1.0)
    torch.library.opcheck(torch.ops.slidesparse.cublaslt_mm.default, args, test_utils=utils)
    wp = fp4.slide_pairs(fp4.prune_pairs(torch.randn(96, 256, generator=g), "2_4"), "2_4")
    w24 = fp4.prepare(wp, 32, 64)
    x24 = fp4.prepare(fp4.lift_pairs(torch.randn(64, 256, generator=g), "2_4"), 32, 64)
    c = ops.cusparselt_compress(w24.packed.cuda(), 0)
    args = (c, x24.packed.cuda(), 96, torch.float4_e2m1fn_x2, torch.bfloat16, 0, 1, -1, 0,
            w24.scale.cuda(), x24.scale.cuda())  # fmt: skip
    torch.library.opcheck(torch.ops.slidesparse.cusparselt_mm.default, args, test_utils=utils)
