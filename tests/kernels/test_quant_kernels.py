"""quant_only / quant_slide / dequant_bias against the torch reference, bit for bit.

Runs on the GPU when there is one, else in Triton's CPU interpreter (small shapes).
"""

import pytest
import torch

from slidesparse.core import sparsity
from slidesparse.core.errors import UserError
from slidesparse.kernels import dequant, numerics, quant, reference, slide
from slidesparse.kernels.bench import bit_equal

IN_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
OUT = ("int8", "fp8")


def _x(M, K, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Rows of very different magnitude, so per-token scales matter.
    x = torch.randn(M, K, generator=g) * torch.logspace(-3, 3, M)[:, None]
    return x.to(dtype).to(device)


def _bits(t):
    return t.view(torch.uint8) if t.element_size() == 1 else t


def assert_same(got, want):
    assert bit_equal(got, want), "kernel and reference differ"


@pytest.mark.parametrize("in_dtype", IN_DTYPES)
@pytest.mark.parametrize("out", OUT)
@pytest.mark.parametrize("shape", [(1, 1), (1, 40), (17, 100), (16, 64), (5, 300)])
def test_quant_only_matches_reference(device, in_dtype, out, shape):
    x = _x(*shape, in_dtype, device)
    q, s = quant.quant_only(x, out)
    assert q.shape == (numerics.ceil_to(shape[0], 16), numerics.ceil_to(shape[1], 32))
    assert s.shape == (q.shape[0],) and s.dtype == torch.float32
    assert_same((q, s), reference.quant_only_ref(x, out))


@pytest.mark.parametrize("pattern", sparsity.ALL_SPARSE)
@pytest.mark.parametrize("out", OUT)
@pytest.mark.parametrize("shape", [(1, 37), (3, 100)])
def test_quant_slide_matches_reference(device, pattern, out, shape):
    x = _x(*shape, torch.bfloat16, device)
    q, s = slide.quant_slide(x, pattern, out)
    assert q.shape == (numerics.ceil_to(shape[0], 16), sparsity.k_slide(shape[1], pattern))
    assert_same((q, s), reference.quant_slide_ref(x, pattern, out))


def test_quant_slide_equals_quant_only_of_lifted_rows(device):
    x = _x(4, 96, torch.bfloat16, device)
    q_slide, s_slide = slide.quant_slide(x, "6:8", "int8")
    q_only, s_only = quant.quant_only(sparsity.lift_activation(x, "2_8"), "int8")
    assert torch.equal(q_slide, q_only) and torch.equal(s_slide, s_only)


@pytest.mark.parametrize(
    "config",
    [
        {"ROWS": 1, "BLOCK": 32, "num_warps": 1},  # two sweeps of many steps
        {"ROWS": 4, "BLOCK": 64, "num_warps": 2},  # several rows per program
        {"ROWS": 16, "BLOCK": 512, "num_warps": 4},  # one pass, all rows in one program
    ],
)
@pytest.mark.parametrize("out", OUT)
def test_every_tiling_gives_the_same_bits(device, config, out):
    x = _x(19, 200, torch.bfloat16, device)
    assert_same(quant.quant_only(x, out, config=config), reference.quant_only_ref(x, out))
    got = slide.quant_slide(x, "2_10", out, config=config)
    assert_same(got, reference.quant_slide_ref(x, "2_10", out))


FINITE = [p for p in sparsity.ALL_SPARSE if p != "2_inf"]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy's inf*0
@pytest.mark.parametrize("pattern", FINITE)
@pytest.mark.parametrize("out", OUT)
@pytest.mark.parametrize(
    "config",
    [
        {"ROWS": 1, "GROUPS": 4, "SPLIT": 0, "num_warps": 1},  # two passes, window-tile stores
        {"ROWS": 4, "GROUPS": 64, "SPLIT": 1, "num_warps": 2},  # one pass, per-window stores
    ],
)
def test_group_kernel_matches_reference(device, pattern, out, config):
    # K = 203 is a multiple of neither L nor 32; rows with inf / NaN; M = 1 alone.
    x = _x(5, 203, torch.bfloat16, device)
    x[1, 7], x[3, 200] = float("inf"), float("nan")
    assert_same(
        slide.quant_slide(x, pattern, out, config=config),
        reference.quant_slide_ref(x, pattern, out),
    )
    x1 = x[4:]
    assert_same(
        slide.quant_slide(x1, pattern, out, config=config),
        reference.quant_slide_ref(x1, pattern, out),
    )


def test_group_configs_need_a_finite_group(device):
    x = _x(2, 64, torch.bfloat16, device)
    with pytest.raises(UserError, match="finite L"):
        slide.quant_slide(x, "2_inf", "int8", config={"ROWS": 1, "GROUPS": 8, "SPLIT": 0})


@pytest.mark.parametrize("out", OUT)
def test_zero_rows_use_the_scale_floor_and_padded_rows_scale_one(device, out):
    x = _x(3, 50, torch.bfloat16, device)
    x[1] = 0
    q, s = quant.quant_only(x, out)
    assert torch.all(_bits(q[1]) == 0)
    assert s[1].item() == pytest.approx(numerics.AMAX_FLOOR / numerics.QMAX[out], rel=1e-6)
    assert torch.all(s[3:] == 1.0) and torch.all(_bits(q[3:]) == 0)
    assert torch.all(_bits(q[:, 50:]) == 0)  # K padding


def test_exact_rounding_at_ties_int8(device):
    # amax = 127 makes inv exactly 1, so the kernel rounds the values given here.
    vals = torch.tensor([127.0, -127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.49999, 126.5, 0.0])
    x = vals[None, :].to(device)
    q, s = quant.quant_only(x, "int8")
    want = torch.tensor([127, -127, 0, 2, 2, 0, -2, -2, 3, 126, 0], dtype=torch.int8)
    assert torch.equal(q[0, : len(vals)].cpu(), want)
    assert s[0].item() == 1.0


def test_exact_rounding_on_the_e4m3_grid(device):
    # Every midpoint between neighbouring E4M3 values (normal and subnormal), a hair either
    # side of it, and carries across binades: torch's cast is the oracle.
    grid = torch.arange(0, 127, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    mids = (grid[1:] + grid[:-1]) / 2
    vals = torch.cat([grid, mids, mids.nextafter(torch.tensor(0.0)), mids.nextafter(grid[-1])])
    vals = torch.cat([vals, -vals, torch.tensor([448.0])])  # 448 pins amax: inv == 1
    x = vals[None, :].to(device)
    q, _ = quant.quant_only(x, "fp8")
    want = vals.clamp(-448, 448).to(torch.float8_e4m3fn)
    assert torch.equal(q[0, : len(vals)].cpu().view(torch.uint8), want.view(torch.uint8))


def test_very_large_values_saturate_at_qmax(device):
    x = torch.tensor([[3.0e38, -3.0e38, 1.0e38, 0.0]], dtype=torch.float32, device=device)
    for out in OUT:
        q, s = quant.quant_only(x, out)
        qmax = numerics.QMAX[out]
        assert q[0, :4].float().tolist()[:2] == [qmax, -qmax]
        assert torch.isfinite(s).all()
        assert_same((q, s), reference.quant_only_ref(x, out))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy's inf*0
@pytest.mark.parametrize("out", OUT)
@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_rows_store_zeros_with_infinite_scale(device, out, bad):
    x = _x(3, 70, torch.bfloat16, device)
    x[1, 5] = bad
    q, s = quant.quant_only(x, out)
    assert torch.isinf(s[1]) and s[1] > 0
    assert torch.all(q[1].float() == 0)  # zeros (fp8 keeps the sign of x * 0)
    assert torch.isfinite(s[[0, 2]]).all()  # other rows unaffected
    assert_same((q, s), reference.quant_only_ref(x, out))
    assert_same(slide.quant_slide(x, "2_8", out), reference.quant_slide_ref(x, "2_8", out))
    # Downstream, the row turns into NaN: the failure stays visible.
    acc = torch.ones(q.shape[0], 8, dtype=torch.int32, device=device) * 0
    y = dequant.dequant_bias(acc, s, torch.ones(8, device=device), None, "bf16")
    assert torch.isnan(y[1].float()).all() and not torch.isnan(y[0].float()).any()


ACC = (torch.int32, torch.bfloat16, torch.float32)


def _acc(M, N, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.int32:
        return torch.randint(-(2**24), 2**24, (M, N), generator=g, dtype=dtype).to(device)
    return (torch.randn(M, N, generator=g) * 1000).to(dtype).to(device)


@pytest.mark.parametrize("acc_dtype", ACC)
@pytest.mark.parametrize("out", ("bf16", "fp16"))
@pytest.mark.parametrize("bias_dtype", (None, torch.bfloat16, torch.float32))
@pytest.mark.parametrize("scalar_a", (False, True))
def test_dequant_bias_matches_reference(device, acc_dtype, out, bias_dtype, scalar_a):
    M, N = 7, 300
    acc = _acc(M, N, acc_dtype, device)
    g = torch.Generator().manual_seed(1)
    sa = (torch.rand(1 if scalar_a else M, generator=g) * 1e-3).to(device)
    sb = (torch.rand(N, generator=g) * 1e-2).to(device)
    bias = None if bias_dtype is None else torch.randn(N, generator=g).to(bias_dtype).to(device)
    got = dequant.dequant_bias(acc, sa, sb, bias, out)
    assert got.shape == (M, N) and got.dtype == numerics.torch_dtype(out)
    assert_same(got, reference.dequant_bias_ref(acc, sa, sb, bias, out))


def test_dequant_bias_overflow_and_tiles(device):
    acc = _acc(33, 70, torch.float32, device) * 1e3  # fp16 overflows to inf, as torch does
    sa, sb = torch.ones(1, device=device), torch.full((70,), 3.0, device=device)
    for config in ({"BLOCK_M": 1, "BLOCK_N": 16, "num_warps": 1}, None):
        got = dequant.dequant_bias(acc, sa, sb, None, "fp16", config=config)
        want = reference.dequant_bias_ref(acc, sa, sb, None, "fp16")
        assert torch.isinf(want.float()).any()
        assert_same(got, want)


def test_bad_inputs_are_user_errors(device, monkeypatch):
    x = _x(2, 8, torch.bfloat16, device)
    with pytest.raises(UserError, match="2-D"):
        quant.quant_only(x[None], "int8")
    with pytest.raises(UserError, match="output dtype"):
        quant.quant_only(x, "bf16")
    with pytest.raises(UserError, match="input dtype"):
        quant.quant_only(x.to(torch.int32), "int8")
    with pytest.raises(UserError, match="unit stride"):
        quant.quant_only(_x(8, 2, torch.bfloat16, device).T, "int8")
    with pytest.raises(UserError, match="quant_only"):
        slide.quant_slide(x, "dense", "int8")
    with pytest.raises(UserError, match="scale_b"):
        dequant.dequant_bias(_acc(2, 8, torch.int32, device), torch.ones(2), torch.ones(7), None)
    if device == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(UserError, match="CUDA"):
            quant.quant_only(x, "int8")
