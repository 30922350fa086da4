"""GPU (any CUTLASS target): every compiled configuration against the fp64 product of its
operands.

Each configuration of each family runs with non-trivial per-token and per-channel scales and
a bias, at M values that cover full tiles, ragged tiles and decode batches, and is compared
with ``(x·Wᵀ)·scale_x·scale_w + bias`` in fp64 (bf16 output: relative 2^-8 plus the
accumulation slack of fast-accumulation FP8). The sparse families go through CUTLASS's own
compressor on a 2:4 weight, and once through the slide: slid weight x lifted activation must
equal the 6:8-pruned dense product.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")

from slidesparse.core import sparsity  # noqa: E402
from slidesparse.gemm.operands import lift  # noqa: E402

DTYPES = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}
MS = (1, 16, 200, 1024)
N, K = 384, 1024


@pytest.fixture(scope="module")
def cutlass():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from slidesparse.native import cutlass

    reason = cutlass.unsupported_reason(torch.cuda.get_device_capability())
    if reason:
        pytest.skip(reason)
    cutlass.load()
    return cutlass


def _needs(cutlass, dtype):
    reason = cutlass.unsupported_reason(torch.cuda.get_device_capability(), dtype)
    if reason:
        pytest.skip(reason)  # INT8 on sm120 / sm121: CUTLASS's builders make none


def _values(shape, dtype, gen):
    """Random values exact in ``dtype`` (fp32 holding them)."""
    if dtype == "int8":
        return torch.randint(-127, 128, shape, generator=gen).float()
    x = torch.randn(shape, generator=gen) * 4
    return x.to(torch.float8_e4m3fn).float()


def _prune_24(w):
    """Keep the two largest |w| of every four along K."""
    g = w.view(w.shape[0], -1, 4)
    keep = g.abs().topk(2, dim=-1).indices
    mask = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, keep, True)
    return (g * mask).view_as(w)


def _check(y, x, w, sx, sw, bias, dtype):
    ref = (x.double() @ w.double().T) * sx.double()[:, None] * sw.double()[None, :]
    ref = ref + bias.double()[None, :]
    # bf16 rounding of the output plus fp32 rounding of the scale multiplies. INT8 sums are
    # exact in int32. FP8 fast accumulation keeps about 13 mantissa bits in the tensor core's
    # running sum (no periodic promotion), so its error grows with sum |x·w|, not with |ref|.
    scale = sx.double()[:, None] * sw.double()[None, :]
    acc_rel = 2.0**-8 if dtype == "fp8" else 0.0
    tol = ref.abs() * 2.0**-7 + (x.double().abs() @ w.double().abs().T) * scale * acc_rel
    err = (y.double().cpu() - ref).abs()
    bad = err > tol + 1e-3
    assert not bad.any(), f"{int(bad.sum())} wrong values, max error {err.max().item():.4g}"


def _operands(dtype, M, gen):
    x = _values((M, K), dtype, gen)
    w = _values((N, K), dtype, gen)
    sx = torch.rand(M, generator=gen) + 0.5
    sw = torch.rand(N, generator=gen) * 1e-2 + 1e-3
    bias = (torch.randn(N, generator=gen)).to(torch.bfloat16).float()
    return x, w, sx, sw, bias


def _run(cutlass, fam, cfg, x, w_dev, meta, sx, sw, bias, dtype, order=(1, 0)):
    xq = x.cuda().to(DTYPES[dtype]).contiguous()
    b = bias.to("cuda", torch.bfloat16)
    N = sw.shape[0]
    return cutlass.scaled_mm(fam, cfg, xq, w_dev, meta, sx.cuda(), sw.cuda(), b, N, *order)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_every_config_and_tile_order(cutlass, dtype, sparse):
    _needs(cutlass, dtype)
    """Every configuration at every M; every tile order (swizzle x raster) at one ragged M."""
    fam = cutlass.family(dtype, sparse)
    names = cutlass.config_names(fam)
    assert names
    gen = torch.Generator().manual_seed(int(sparse))
    for M in MS:
        x, w, sx, sw, bias = _operands(dtype, M, gen)
        if sparse:
            w = _prune_24(w)
            wq, meta = cutlass.compress(fam, w.cuda().to(DTYPES[dtype]))
        else:
            wq, meta = w.cuda().to(DTYPES[dtype]).contiguous(), None
        orders = cutlass.SCHEDULES if M == 200 else cutlass.SCHEDULES[:1]
        for cfg, name in enumerate(names):
            for order in orders:
                y = _run(cutlass, fam, cfg, x, wq, meta, sx, sw, bias, dtype, order)
                torch.cuda.synchronize()
                try:
                    _check(y, x, w, sx, sw, bias, dtype)
                except AssertionError as exc:
                    what = f"{dtype} {'sparse' if sparse else 'dense'} {name} {order} M={M}"
                    raise AssertionError(f"{what}: {exc}") from None


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_slid_equals_pruned(cutlass, dtype):
    _needs(cutlass, dtype)
    """6:8 through the slide on CUTLASS's sparse GEMM == the pruned dense product."""
    pattern = sparsity.parse_pattern("2_8")
    gen = torch.Generator().manual_seed(2)
    M = 200
    x, w, sx, sw, bias = _operands(dtype, M, gen)
    w = sparsity.prune(w, pattern)
    w_slide = sparsity.slide_weight(w, pattern)
    x_lift = lift(x, pattern, w_slide.shape[1])
    fam = cutlass.family(dtype, True)
    comp, meta = cutlass.compress(fam, w_slide.cuda().to(DTYPES[dtype]))
    y = _run(cutlass, fam, 0, x_lift, comp, meta, sx, sw, bias, dtype)
    torch.cuda.synchronize()
    _check(y, x, w, sx, sw, bias, dtype)
