"""Bad input exits 2 with one line; configs, weights and the custom op's contract."""

import json

import pytest
import torch
from click.testing import CliRunner
from engine_tiny import write_tiny

from slidesparse.cli import cli
from slidesparse.core.errors import UserError
from slidesparse.engine import build_engine
from slidesparse.engine.config import builtin_config, resolve_config


def _run(*args):
    from slidesparse.cli import main

    runner = CliRunner()
    # main() turns UserError into one line + exit 2, as the installed entry point does
    return runner.invoke(cli, list(args), standalone_mode=False), main(list(args))


def _one_line_exit_2(capsys, args, match):
    from slidesparse.cli import main

    rc = main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], err


@pytest.fixture
def llama(tmp_path):
    return write_tiny(tmp_path / "llama", "llama")


def test_unsupported_architecture(tmp_path, capsys, llama):
    cfg = json.loads((llama / "config.json").read_text())
    cfg.update(architectures=["MistralForCausalLM"], model_type="mistral")
    (llama / "config.json").write_text(json.dumps(cfg))
    _one_line_exit_2(
        capsys,
        ["generate", "--model", str(llama), "--tokens", "1 2"],
        "unsupported architecture MistralForCausalLM",
    )


def test_bitnet_refused_with_reason(capsys):
    with pytest.raises(UserError, match="relu"):
        builtin_config("BitNet-2B")
    _one_line_exit_2(capsys, ["bench", "e2e", "--model", "BitNet-2B"], "BitNet-2B is not")


def test_missing_shard(tmp_path, capsys):
    folder = write_tiny(tmp_path / "m", "qwen2", shards=2)
    next(folder.glob("model-00002-*.safetensors")).unlink()
    _one_line_exit_2(
        capsys,
        ["generate", "--model", str(folder), "--tokens", "1"],
        "shard model-00002-of-00002.safetensors listed",
    )


def test_sharded_folder_loads(tmp_path):
    a = build_engine(write_tiny(tmp_path / "one", "qwen2"), "bf16")
    b = build_engine(write_tiny(tmp_path / "two", "qwen2", shards=3), "bf16")
    x = torch.randint(0, 256, (1, 8))
    with torch.inference_mode():
        assert torch.equal(a.model.all_logits(x), b.model.all_logits(x))


def test_shape_mismatch(tmp_path, capsys, llama):
    cfg = json.loads((llama / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (llama / "config.json").write_text(json.dumps(cfg))
    _one_line_exit_2(
        capsys,
        ["generate", "--model", str(llama), "--tokens", "1"],
        "mlp.gate_proj.weight has shape (128, 64), the config says (96, 64)",
    )


def test_not_pruned_refused(capsys, llama):
    args = [
        "generate",
        "--model",
        str(llama),
        "--tokens",
        "1 2",
        "--backend",
        "slidesparse",
        "--sparsity",
        "2_8",
        "--require-pruned",
        "--max-new",
        "1",
    ]
    _one_line_exit_2(capsys, args, "is not pruned to 2_8")


def test_pruned_checkpoint_accepted(tmp_path):
    folder = write_tiny(tmp_path / "p", "llama", prune="2_8")
    eng = build_engine(folder, "bf16", sparsity="2_8", require_pruned=True)
    assert eng.info.prune == "2_8"


@pytest.mark.parametrize(
    "args,match",
    [
        (["--backend", "slidesparse"], "needs --sparsity 2_L"),
        (["--backend", "w8a8", "--sparsity", "3_7"], "3_7"),
        (["--tokens", "1 x"], "give token ids"),
        (["--tokens", "999"], "outside the vocabulary"),
        (["--prompt", "hi"], "needs a model folder with a tokenizer"),
    ],
)
def test_generate_bad_options(capsys, llama, args, match):
    base = ["generate", "--model", str(llama)]
    if "--tokens" not in args and "--prompt" not in args:
        base += ["--tokens", "1"]
    _one_line_exit_2(capsys, base + args, match)


def test_bench_e2e_bad_options(capsys):
    _one_line_exit_2(capsys, ["bench", "e2e", "--model", "Qwen2.5-7B", "--dtype", "fp4"], "fp4")
    _one_line_exit_2(capsys, ["bench", "e2e", "--model", "Qwen2.5-7B", "--phase", "x"], "x")
    _one_line_exit_2(capsys, ["bench", "e2e", "--model", "Qwen2.5-7B", "--M", "0"], "--M")
    _one_line_exit_2(capsys, ["bench", "e2e", "--model", "NoSuch-1B"], "unknown model")
    _one_line_exit_2(capsys, ["bench", "e2e", "--model", "Qwen2.5-7B", "--gemm", "x"], "--gemm")


def test_builtin_configs_match_kernel_shapes():
    from slidesparse.core.models import get_model

    for name in ("Llama3.2-1B", "Llama3.2-3B", "Qwen2.5-7B", "Qwen2.5-14B"):
        cfg = builtin_config(name)
        spec = get_model(name)
        shapes = {"qkv": "qkv_proj", "o": "o_proj", "gate_up": "gate_up_proj", "down": "down_proj"}
        for k, v in shapes.items():
            assert spec.layers[k] == cfg.layer_shapes[v], (name, k)
    llama = builtin_config("Llama3.2-3B")
    assert (llama.rope_theta, llama.rope_scaling.factor, llama.tie_word_embeddings) == (
        500000.0,
        32.0,
        True,
    )
    qwen = builtin_config("qwen2.5-7b-instruct")
    assert (qwen.qkv_bias, qwen.tie_word_embeddings, qwen.rms_eps) == (True, False, 1e-6)


def test_config_from_folder(llama):
    cfg, folder = resolve_config(llama)
    assert folder == llama and cfg.family == "llama" and cfg.rope_scaling is not None


def test_generate_cli_runs(capsys, llama):
    from slidesparse.cli import main

    rc = main(["generate", "--model", str(llama), "--tokens", "5 6 7", "--max-new", "4"])
    out = capsys.readouterr().out
    assert rc == 0 and "tokens: " in out


def test_engine_mm_opcheck():
    from slidesparse.engine.linear import engine_mm, quantize_weight

    g = torch.Generator().manual_seed(0)
    x = torch.randint(-127, 128, (16, 64), generator=g, dtype=torch.int8)
    w, _ = quantize_weight(torch.randn(32, 64, generator=g), torch.int8)
    torch.library.opcheck(engine_mm, (x, w, 32, "cpu-ref", torch.int32, []))
    xf = (torch.randn(16, 64, generator=g) * 4).to(torch.float8_e4m3fn)
    wf, _ = quantize_weight(torch.randn(32, 64, generator=g), torch.float8_e4m3fn)
    # test_schema compares fp8 tensors with a multiply torch has no CPU fp8 kernel for.
    torch.library.opcheck(
        engine_mm,
        (xf, wf, 32, "cpu-ref", torch.bfloat16, []),
        test_utils=("test_faketensor", "test_aot_dispatch_dynamic"),
    )
    ref = x.double() @ w.double().T
    assert torch.equal(engine_mm(x, w, 32, "cpu-ref", torch.int32, []), ref.to(torch.int32))


def test_quantize_weight_keeps_zeros_and_rounds_half_even():
    from slidesparse.engine.linear import quantize_weight

    w = torch.tensor([[127.0, 0.5, 1.5, -2.5, 0.0]])
    q, s = quantize_weight(w, torch.int8)
    assert s.item() == 1.0
    assert q.tolist() == [[127, 0, 2, -2, 0]]


@pytest.mark.parametrize("backend", ["w8a8", "slidesparse"])
def test_quant_linear_compiles_without_graph_breaks(tmp_path, backend):
    """The quantized linear is three registered custom ops with fakes: torch.compile traces
    it whole (fullgraph) and the compiled module gives the eager result bit for bit."""
    eng = build_engine(
        write_tiny(tmp_path / "m", "llama"), backend, sparsity="2_8", weight_cache=False
    )
    m = eng.model.layers[0].mlp.gate_up_proj
    x = torch.randn(2, 16, m.K, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager", dynamic=False)
    with torch.inference_mode():
        assert torch.equal(compiled(x), m(x))


@pytest.mark.parametrize(
    ("device", "sparse", "gemm", "cutlass_error", "ext_error", "kinds"),
    [
        ("cpu", True, "cutlass", None, None, ("cpu-ref",)),  # a CPU runs the reference
        ("cuda", False, "auto", None, None, ("cutlass", "cublaslt")),
        ("cuda", True, "auto", None, None, ("cutlass-sparse", "cusparselt")),
        ("cuda", True, "auto", None, "no nvcc", ("cutlass-sparse", "torch-cslt")),
        ("cuda", True, "auto", "built for sm90a only", None, ("cusparselt",)),
        ("cuda", False, "auto", "built for sm90a only", "no nvcc", ("torch-builtin",)),
        ("cuda", False, "csrc", None, None, ("cublaslt",)),
        ("cuda", True, "cutlass", None, None, ("cutlass-sparse",)),
    ],
)
def test_engine_gemm_choice(device, sparse, gemm, cutlass_error, ext_error, kinds):
    from slidesparse.engine.algos import gemm_kinds

    got = gemm_kinds(device, sparse, ext_error, gemm=gemm, cutlass_error=cutlass_error)
    assert got == kinds


def test_engine_gemm_choice_errors_name_the_fix():
    from slidesparse.core.errors import UserError
    from slidesparse.engine.algos import gemm_kinds

    with pytest.raises(UserError, match="valid: auto, cutlass, csrc"):
        gemm_kinds("cuda", False, gemm="cublas")
    with pytest.raises(UserError, match="--gemm cutlass cannot run here: no sm90"):
        gemm_kinds("cuda", True, gemm="cutlass", cutlass_error="no sm90")
