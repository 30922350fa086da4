"""Engine correctness on the tiny 2-layer model (CPU in CI; the gpu-marked copies on a GPU)."""

import pytest
import torch
from engine_tiny import write_tiny

from slidesparse.engine import build_engine

FAMILIES = ("llama", "qwen2")
GPU = pytest.mark.gpu
ON_CPU = pytest.mark.skipif(torch.cuda.is_available(), reason="the gpu-marked variant runs here")
NEEDS_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _devices():
    return [pytest.param("cpu", marks=ON_CPU), pytest.param("cuda", marks=[GPU, NEEDS_GPU])]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {fam: write_tiny(root / fam, fam) for fam in FAMILIES}


def _prompt(B=2, S=12, seed=1):
    return torch.randint(0, 256, (B, S), generator=torch.Generator().manual_seed(seed))


def _engines(folder, device, dtype, pattern="2_8"):
    kw = dict(dtype=dtype, sparsity=pattern, device=device, weight_cache=False)
    return build_engine(folder, "w8a8", **kw), build_engine(folder, "slidesparse", **kw)


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_slidesparse_logits_equal_w8a8(folders, family, dtype, device):
    """Same pruned weights: the slide is exact, and INT8 sums are exact in int32, so logits
    are bitwise equal. CPU FP8 sums in fp64 are exact too (see engine.linear), so CPU FP8 is
    bitwise as well; GPU FP8 tensor cores accumulate in a different order over K vs K_slide
    with fewer than fp32's bits, and the BF16 GEMM output rounds that difference, so GPU FP8
    is held to 2^-6 of the logit range (a few BF16 ulps through two layers)."""
    dense, slide = _engines(folders[family], device, dtype)
    x = _prompt().to(device)
    with torch.inference_mode():
        a = dense.model.all_logits(x).float()
        b = slide.model.all_logits(x).float()
    assert torch.isfinite(a).all()
    if dtype == "int8" or device == "cpu":
        assert torch.equal(a, b)
    else:
        tol = 2.0**-6 * a.abs().max().item()
        assert (a - b).abs().max().item() <= tol


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize(
    "family",
    ["llama", pytest.param("qwen2", marks=pytest.mark.slow)],  # ~13 s each on CPU
)
def test_greedy_32_tokens_identical(folders, family, device):
    """INT8: 32 greedy tokens are the same on w8a8 and slidesparse (bitwise-equal logits)."""
    dense, slide = _engines(folders[family], device, "int8")
    x = _prompt()
    a, b = dense.generate(x, 32), slide.generate(x, 32)
    assert a.shape == (2, 32)
    assert torch.equal(a, b)
    assert len(set(a[0].tolist())) > 4  # the tiny model does not just repeat one token


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", ["bf16", "slidesparse"])
def test_decode_with_cache_equals_recompute(folders, family, backend, device):
    """Prefill + 6 cached decode steps give the logits of recomputing the whole sequence."""
    eng = build_engine(
        folders[family],
        backend,
        sparsity="2_6" if backend != "bf16" else None,
        device=device,
        weight_cache=False,
    )
    x = _prompt(B=2, S=10)
    steps = []
    with torch.inference_mode():
        steps.append(eng.prefill(x, max_new=7).float().clone())
        for _ in range(6):
            steps.append(eng.step().float().clone())
        seq = eng.hist[:, : 10 + 7]  # prompt + 7 greedy tokens; logits of the last 7 inputs
        full = eng.model.all_logits(seq[:, :16]).float()[:, 9:16]  # [B, 7, V]
    got = torch.stack(steps, dim=1)
    scale = full.abs().max().item()
    err = (got - full).abs()
    # The cache path attends with fp32 softmax over bf16 scores, SDPA in its own order: a few
    # bf16 ulps of the largest logit. Quantized backends then round each activation row to
    # 1/127 (1/16 for FP8) of its max, so an ulp of difference can flip a quantized value and
    # grow to a quantization step; a wrong position or cache slot errs by O(scale) instead.
    tol_max, tol_mean = (2.0**-5, 2.0**-7) if backend == "bf16" else (2.0**-3, 2.0**-6)
    assert err.max().item() <= tol_max * scale
    assert err.mean().item() <= tol_mean * scale


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_matches_transformers(folders, family):
    transformers = pytest.importorskip("transformers")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(folders[family]), dtype=torch.bfloat16
    ).to(device)
    hf.eval()
    eng = build_engine(folders[family], "bf16", device=device)
    x = _prompt(S=16).to(device)
    with torch.inference_mode():
        ref = hf(x).logits.float()
        got = eng.model.all_logits(x).float()
    # Same ops in the same order on CPU; on a GPU SDPA/cuBLAS kernels may differ per call site.
    tol = 0.0 if device == "cpu" else 2.0**-6 * ref.abs().max().item()
    assert (ref - got).abs().max().item() <= tol
