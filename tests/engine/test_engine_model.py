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


def _engines(folder, device, dtype, pattern="2_8", gemm="auto"):
    kw = dict(dtype=dtype, sparsity=pattern, device=device, weight_cache=False, gemm=gemm)
    return build_engine(folder, "w8a8", **kw), build_engine(folder, "slidesparse", **kw)


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_slidesparse_logits_equal_w8a8(folders, family, dtype, device):
    """Same pruned weights: the slide is exact, and INT8 sums are exact in int32, so logits
    are bitwise equal. CPU FP8 sums in fp64 are exact too (see engine.linear), so CPU FP8 is
    bitwise as well.

    GPU FP8: cuBLASLt and cuSPARSELt sum K (resp. K_slide) products in different orders and
    round the sum to BF16, so one GEMM output may differ by a BF16 ulp (the per-linear bound
    is checked tightly by test_linear_slidesparse_equals_w8a8). The next layer
    re-quantizes that activation to E4M3 (3 mantissa bits): a 1-ulp BF16 change that crosses
    an E4M3 rounding boundary moves that input by a whole E4M3 step (2^-4 relative), which
    then spreads through every later GEMM. So the model-level bound is that of one
    quantization step on a few inputs, not of BF16 rounding: max |diff| <= 2^-3 of the
    logit range and mean |diff| <= 2^-6 of it. A wrong slide, scale or layout errs by O(range)
    everywhere and fails the mean bound."""
    _check_logits(folders[family], dtype, device, "auto")


@GPU
@NEEDS_GPU
@pytest.mark.parametrize("gemm", ["cutlass", "csrc"])
@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_slidesparse_logits_equal_w8a8_on_each_gemm(folders, dtype, gemm):
    """The same on each GPU GEMM path: CUTLASS with the scales in its epilogue, and
    cuBLASLt / cuSPARSELt with a dequant pass (INT8 bitwise on both)."""
    reason = _cutlass_reason(dtype) if gemm == "cutlass" else None
    if reason:
        pytest.skip(reason)
    _check_logits(folders["qwen2"], dtype, "cuda", gemm)


def _cutlass_reason(dtype: str) -> str | None:
    from slidesparse.native import cutlass

    return cutlass.unsupported_reason(tuple(torch.cuda.get_device_capability()), dtype)


def _check_logits(folder, dtype, device, gemm):
    dense, slide = _engines(folder, device, dtype, gemm=gemm)
    if gemm != "auto":
        want = {"cutlass": ("cutlass", "cutlass-sparse"), "csrc": ("cublaslt", "cusparselt")}
        assert (dense.info.gemm, slide.info.gemm) == want[gemm]
    x = _prompt().to(device)
    with torch.inference_mode():
        a = dense.model.all_logits(x).float()
        b = slide.model.all_logits(x).float()
    assert torch.isfinite(a).all()
    # auto may route a dense linear and its sparse twin through different epilogues
    # (CUTLASS's fused scales, or a dequant pass): equal INT8 sums, but not the same rounding
    # of the scaled output, so INT8 is bitwise only where both took the same family.
    same = gemm != "auto" or device == "cpu" or _families(dense) == _families(slide)
    if (dtype == "int8" and same) or device == "cpu":
        assert torch.equal(a, b)
    else:
        rng = a.abs().max().item()
        err = (a - b).abs()
        assert err.max().item() <= 2.0**-3 * rng, (err.max().item(), rng)
        assert err.mean().item() <= 2.0**-6 * rng, (err.mean().item(), rng)


def _families(eng) -> dict:
    """linear -> M_pad -> whether its route applies the scales in the GEMM."""
    return {
        name: {m: r["kind"].startswith("cutlass") for m, r in by_m.items()}
        for name, by_m in eng.selector.summary().items()
    }


@GPU
@NEEDS_GPU
@pytest.mark.parametrize("pattern", [None, "2_8"])
def test_auto_routes_each_linear_to_a_kind_it_timed(folders, pattern):
    """auto keeps both weight forms and routes every linear per padded M to the faster of
    the fused-scale CUTLASS GEMM and cuBLASLt / cuSPARSELt + dequant, whose logits agree."""
    reason = _cutlass_reason("int8")
    if reason:
        pytest.skip(reason)
    kw = dict(dtype="int8", device="cuda", weight_cache=False)
    backend = "w8a8" if pattern is None else "slidesparse"
    auto = build_engine(folders["qwen2"], backend, sparsity=pattern, gemm="auto", **kw)
    csrc = build_engine(folders["qwen2"], backend, sparsity=pattern, gemm="csrc", **kw)
    fused, other = ("cutlass", "cublaslt") if pattern is None else ("cutlass-sparse", "cusparselt")
    assert auto.info.gemm == f"{fused}+{other}"
    x = _prompt().to("cuda")
    with torch.inference_mode():
        a = auto.model.all_logits(x).float()
        b = csrc.model.all_logits(x).float()
    got = auto.selector.summary()
    assert set(got) == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    for by_m in got.values():
        for r in by_m.values():
            assert r["kind"] in (fused, other) and r["ratio"] > 0
    rng = b.abs().max().item()
    assert (a - b).abs().max().item() <= 2.0**-3 * rng


def _bf16_ulp(v: torch.Tensor) -> torch.Tensor:
    """The BF16 ulp at |v| (8 significant bits): 2^(floor(log2 |v|) - 7), floored at 2^-126."""
    e = torch.floor(torch.log2(v.abs().clamp_min(2.0**-126)))
    return torch.exp2(e - 7)


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_linear_slidesparse_equals_w8a8(folders, dtype, device):
    """One linear (gate_up_proj of layer 0, same pruned weight, same input) on both backends.

    INT8, and FP8 on the CPU: bitwise. GPU FP8: the quantized inputs are identical (the slide
    only copies values), so the only difference is the order in which the two libraries sum
    the K products in fp32 before rounding the GEMM output to BF16: each output may land on
    the other side of a BF16 rounding boundary (1 ulp), and dequant (fp32 multiply by the two
    scales, plus bias, rounded to BF16 once more) can add one more ulp. Bound: |a - b| <= 2
    BF16 ulps of max(|a|, |b|) plus 2^-12 of sum_k |x_k w_k| (the absolute part covers
    outputs near cancellation, where an fp32 accumulation difference of the product sum, not
    of the result, decides; 2^-12 leaves room for tensor-core accumulators narrower than
    fp32's 24 bits)."""
    dense, slide = _engines(folders["llama"], device, dtype)
    la = dense.model.layers[0].mlp.gate_up_proj
    lb = slide.model.layers[0].mlp.gate_up_proj
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(48, la.K, generator=g) * 0.5).to(torch.bfloat16).to(device)
    with torch.inference_mode():
        a, b = la(x).float(), lb(x).float()
        q, sa = la.quantize(x)
        wq = la.weight.float() if la.weight.dim() == 2 else None
    assert torch.isfinite(a).all() and a.abs().max() > 0
    if dtype == "int8" or device == "cpu":
        assert torch.equal(a, b)
        return
    mag = (q[: x.shape[0]].float().abs() @ wq.abs().T) * sa[: x.shape[0], None] * la.w_scale
    tol = 2 * _bf16_ulp(torch.maximum(a.abs(), b.abs())) + 2.0**-12 * mag
    err = (a - b).abs()
    assert (err <= tol).all(), (err.max().item(), (err / tol).max().item())


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


def _decode_cases():
    """(device, fused): the GPU runs the fused kernels; the CPU runs eager, and the fused
    kernels under the interpreter too (bf16 only: the wiring, not the backend, is checked)."""
    return [*_devices(), pytest.param("cpu-fused", marks=ON_CPU)]


@pytest.mark.parametrize("device", _decode_cases())
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", ["bf16", "slidesparse"])
def test_decode_with_cache_equals_recompute(folders, family, backend, device):
    """Prefill + 6 cached decode steps give the logits of recomputing the whole sequence."""
    if device == "cpu-fused" and backend != "bf16":
        pytest.skip("fused wiring is checked on bf16 (the quant path is the same ops)")
    fused = True if device == "cpu-fused" else None
    device = "cpu" if device == "cpu-fused" else device
    eng = build_engine(
        folders[family],
        backend,
        sparsity="2_6" if backend != "bf16" else None,
        device=device,
        weight_cache=False,
        fused=fused,
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
