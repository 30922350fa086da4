"""The fused Triton kernels (norm + residual, RoPE + cache write, SiLU-and-mul) against the
eager ops they replace: on the GPU, and on the CPU under Triton's interpreter."""

import pytest
import torch
import torch.nn.functional as F

GPU = pytest.mark.gpu
ON_CPU = pytest.mark.skipif(torch.cuda.is_available(), reason="the gpu-marked variant runs here")
NEEDS_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = [pytest.param("cpu", marks=ON_CPU), pytest.param("cuda", marks=[GPU, NEEDS_GPU])]


def _close_bf16(a, b, ulps=2):
    """Elementwise within ``ulps`` BF16 ulps of the larger magnitude (or 2^-20 absolute).

    Two roundings follow the step whose order or libm differs (the RMS sum, exp): the
    normalized value (resp. silu) may flip one ulp, and the product with the weight (resp. up)
    rounds again, so a flip shows as up to 2 ulps of the result."""
    a, b = a.float(), b.float()
    m = torch.maximum(a.abs(), b.abs())
    ulp = torch.exp2(torch.floor(torch.log2(m.clamp_min(2.0**-20))) - 7)
    return ((a - b).abs() <= ulps * ulp).all().item()


def _rnd(*shape, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(torch.bfloat16).to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_add_rmsnorm(device):
    from slidesparse.engine.fused import add_rmsnorm
    from slidesparse.engine.model import RMSNorm

    x, d = _rnd(5, 96, device=device), _rnd(5, 96, device=device, seed=1)
    w = _rnd(96, device=device, seed=2)
    ref = RMSNorm(w, 1e-5)
    h, y = add_rmsnorm(x, d, w, 1e-5)
    assert torch.equal(h, x + d)  # the residual add rounds once, as torch's bf16 add
    assert _close_bf16(y, ref(x + d))  # only the order of the mean's sum differs
    h0, y0 = add_rmsnorm(x, None, w, 1e-5)
    assert h0.data_ptr() == x.data_ptr() and _close_bf16(y0, ref(x))


@pytest.mark.parametrize("device", DEVICES)
def test_silu_mul(device):
    from slidesparse.engine.fused import silu_mul

    x = _rnd(3, 2, 2 * 80, device=device) * 3
    gate, up = x.chunk(2, dim=-1)
    assert _close_bf16(silu_mul(x), F.silu(gate) * up)


@pytest.mark.parametrize("device", DEVICES)
def test_rope_and_cache_write(device):
    from slidesparse.engine.fused import rope_
    from slidesparse.engine.model import Rope

    H, KV, D, B, S, T = 6, 3, 16, 2, 5, 12  # H + KV = 9: masked head lanes

    class Cfg:  # what Rope reads of an EngineConfig
        head_dim, rope_theta, rope_scaling = D, 10000.0, None

    from slidesparse.engine import config as cfgmod

    inv = cfgmod.rope_inv_freq(Cfg)
    t = torch.arange(T, dtype=torch.float32)
    emb = torch.cat([torch.outer(t, inv)] * 2, dim=-1)
    cos, sin = emb.cos().to(torch.bfloat16).to(device), emb.sin().to(torch.bfloat16).to(device)
    qkv = _rnd(B * S, (H + 2 * KV) * D, device=device)
    ref = qkv.clone()
    kc = torch.zeros(B + 1, KV, T, D, dtype=torch.bfloat16, device=device)
    vc = torch.zeros_like(kc)
    pos0 = torch.tensor([3], device=device)
    rope_(qkv, cos, sin, pos0, S, H, KV, D, (kc, vc))
    q, k, v = ref.view(B, S, -1).split([H * D, KV * D, KV * D], dim=-1)
    c, s = cos[3 : 3 + S], sin[3 : 3 + S]
    q = Rope.apply(q.view(B, S, H, D).transpose(1, 2), c, s)
    k = Rope.apply(k.view(B, S, KV, D).transpose(1, 2), c, s)
    v = v.view(B, S, KV, D).transpose(1, 2)
    got = qkv.view(B, S, -1).split([H * D, KV * D, KV * D], dim=-1)
    assert torch.equal(got[0].view(B, S, H, D).transpose(1, 2), q)  # bitwise: same roundings
    assert torch.equal(got[1].view(B, S, KV, D).transpose(1, 2), k)
    assert torch.equal(kc[:B, :, 3 : 3 + S], k) and torch.equal(vc[:B, :, 3 : 3 + S], v)
    assert not kc[:, :, :3].any() and not kc[B].any()  # nothing else written


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_dequant_silu_mul_equals_dequant_then_silu_mul(device, dtype):
    """The fused gate_up epilogue equals dequant_bias followed by silu_mul bit for bit (same
    roundings; on the GPU exp may differ by an fp32 ulp, so 2 BF16 ulps there)."""
    from slidesparse.engine.fused import dequant_silu_mul, silu_mul
    from slidesparse.kernels import ops as kops

    g = torch.Generator().manual_seed(5)
    M, M_pad, inter = 13, 16, 80
    if dtype == "int8":
        acc = torch.randint(-(2**15), 2**15, (M_pad, 2 * inter), generator=g, dtype=torch.int32)
    else:
        acc = (torch.randn(M_pad, 2 * inter, generator=g) * 300).to(torch.bfloat16)
    sa = torch.rand(M_pad, generator=g) * 1e-2 + 1e-3
    sb = torch.rand(2 * inter, generator=g) * 1e-2 + 1e-3
    acc, sa, sb = acc.to(device), sa.to(device), sb.to(device)
    ref = silu_mul(kops.dequant_bias(acc[:M], sa[:M], sb, None, torch.bfloat16))
    got = dequant_silu_mul(acc, sa, sb, M)
    assert got.shape == (M, inter)
    if device == "cpu":
        assert torch.equal(got, ref)
    else:
        assert _close_bf16(got, ref)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU every engine runs fused")
def test_fused_engine_prefill_equals_eager(tmp_path):
    """The whole fused prefill (norms, RoPE, attention, the gate_up epilogue) under the
    interpreter gives the eager engine's logits bit for bit on a quantized backend."""
    from engine_tiny import write_tiny

    from slidesparse.engine import build_engine

    folder = write_tiny(tmp_path / "q", "qwen2")
    kw = dict(sparsity="2_8", device="cpu", weight_cache=False)
    eager = build_engine(folder, "w8a8", **kw)
    fused = build_engine(folder, "w8a8", fused=True, **kw)
    x = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(eager.model.all_logits(x), fused.model.all_logits(x))
        eager.reset(2, 13)
        fused.reset(2, 13)
        assert torch.equal(eager.model.prefill(x), fused.model.prefill(x))
        assert torch.equal(eager.model.layers[1].attn.cache.k, fused.model.layers[1].attn.cache.k)
