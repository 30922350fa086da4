"""Checkpoints: compressed-tensors W8A8 loading, ``convert``, ``accuracy`` (tiny model; the
gpu-marked variants run the same on the GPU machine)."""

import json
from pathlib import Path

import pytest
import torch
from engine_tiny import LAYERS, write_tiny, write_tokenizer, write_w8a8
from safetensors.torch import load_file, save_file

from slidesparse.cli import main
from slidesparse.core import sparsity
from slidesparse.engine import build_engine
from slidesparse.engine.convert import convert

GPU = pytest.mark.gpu
ON_CPU = pytest.mark.skipif(torch.cuda.is_available(), reason="the gpu-marked variant runs here")
NEEDS_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = [pytest.param("cpu", marks=ON_CPU), pytest.param("cuda", marks=[GPU, NEEDS_GPU])]
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _prompt(B=2, S=12):
    return torch.randint(0, 256, (B, S), generator=torch.Generator().manual_seed(1))


def _logits(folder, backend, device, **kw):
    eng = build_engine(folder, backend, device=device, weight_cache=False, **kw)
    with torch.inference_mode():
        return eng.model.all_logits(_prompt().to(device)).float(), eng


def _linear_names(i):
    attn = [f"model.layers.{i}.self_attn.{n}" for n in LINEARS[:4]]
    return attn + [f"model.layers.{i}.mlp.{n}" for n in LINEARS[4:]]


@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_convert_prunes_every_group_and_writes_compressed_tensors(tmp_path, dtype):
    src = write_tokenizer(write_tiny(tmp_path / "src", "qwen2"))
    r = convert(str(src), tmp_path / "dst", "2_8", dtype, progress=False)
    assert r.linears == 7 * LAYERS and r.pattern == "2_8" and r.dtype == dtype
    cfg = json.loads((r.dst / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"].startswith(
        "int" if dtype == "int8" else "float"
    )
    meta = cfg["slidesparse"]
    assert meta["pattern"] == "2_8" and len(meta["source_sha256"]) == 64
    assert meta["k_slide"]["mlp.down_proj"] == sparsity.k_slide(128, "2_8")
    assert (r.dst / "tokenizer.json").is_file()
    t = load_file(str(r.dst / "model.safetensors"))
    want = torch.int8 if dtype == "int8" else torch.float8_e4m3fn
    for i in range(LAYERS):
        for m in _linear_names(i):
            q, s = t[f"{m}.weight"], t[f"{m}.weight_scale"]
            assert q.dtype == want and s.shape == (q.shape[0], 1) and s.dtype == torch.float32
            assert sparsity.check_pattern(q, "2_8"), m  # >= 2 zeros in every group of 8
    assert t["model.layers.0.self_attn.q_proj.bias"].dtype == torch.bfloat16  # copied


def test_scales_round_trip_and_a_w8a8_source_keeps_its_values(tmp_path):
    src = write_w8a8(tmp_path / "w8a8", "llama", "int8")
    before = load_file(str(src / "model.safetensors"))
    r = convert(str(src), tmp_path / "dst", "2_8", progress=False)
    assert r.dtype == "int8"  # the source's own
    after = load_file(str(r.dst / "model.safetensors"))
    for m in _linear_names(1):
        assert torch.equal(after[f"{m}.weight_scale"], before[f"{m}.weight_scale"].float())
        pruned = sparsity.prune(before[f"{m}.weight"], "2_8")
        assert torch.equal(after[f"{m}.weight"], pruned)  # pruning zeroes, nothing requantized


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_compressed_tensors_folder_loads_to_the_logits_of_the_same_weights(tmp_path, dtype, device):
    # the bf16 folder quantizes on load exactly as the W8A8 folder was written
    bf16 = write_tiny(tmp_path / "bf16", "qwen2")
    w8a8 = write_w8a8(tmp_path / "w8a8", "qwen2", dtype)
    a, _ = _logits(bf16, "w8a8", device, dtype=dtype)
    b, eng = _logits(w8a8, "w8a8", device)
    assert eng.info.dtype == dtype  # taken from the checkpoint
    assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("store_slid", [False, True])
def test_converted_slid_engine_equals_the_pruned_w8a8_engine(tmp_path, device, store_slid):
    src = write_tiny(tmp_path / "src", "llama")
    dst = convert(str(src), tmp_path / "dst", "2_8", "int8", store_slid=store_slid).dst
    assert (dst / "slid.slidesparse").is_file() == store_slid
    a, dense = _logits(dst, "w8a8", device, sparsity="2_8", require_pruned=True)
    b, slid = _logits(dst, "slidesparse", device, sparsity="2_8")
    assert torch.equal(a, b)  # INT8: the slide is exact
    x = _prompt(B=1).to(device)
    assert torch.equal(dense.generate(x, 16), slid.generate(x, 16))


@pytest.mark.slow
def test_accuracy_command_stores_rows_and_the_report_shows_them(tmp_path, capsys, monkeypatch):
    from slidesparse.report.build import build_reports
    from slidesparse.results.store import Store

    monkeypatch.chdir(tmp_path)
    src = write_tokenizer(write_tiny(tmp_path / "src", "llama"))
    # already pruned to 2_8: pruning to 2_8 again changes nothing
    pre = convert(str(src), tmp_path / "pre", "2_8", "int8", progress=False).dst
    # a short text keeps the interpreter's work small: 4 windows of 32 tokens
    from slidesparse.engine.accuracy import read_text

    (tmp_path / "t.txt").write_text(" ".join(read_text(None)[0].split()[:140]))
    args = ["--sparsity", "dense,2_4,2_8", "--window", "32", "--new-tokens", "4"]
    args += ["--text", str(tmp_path / "t.txt")]
    code = main(["accuracy", str(pre), *args, "--results", "res"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "perplexity" in out and "x dense" in out
    frame = Store("res").read()
    rows = frame[frame["task"] == "accuracy"]
    assert len(rows) == 3 and set(rows["status"]) == {"ok"}
    ppl = {}
    for r in rows.itertuples():
        x = json.loads(r.extra)
        assert 1 < x["perplexity"] < 1e6 and x["windows"] >= 3
        ppl[(Path(r.model).name, r.sparsity)] = x["perplexity"]
        if r.sparsity != "dense":
            assert r.max_abs_err == 0.0 and r.correct  # INT8 slid == pruned, bit for bit
    assert ppl[("pre", "2_8")] == ppl[("pre", "dense")]  # already (L-2):L
    assert ppl[("pre", "2_4")] != ppl[("pre", "dense")]  # 2:4 prunes further
    paths = build_reports("res", "out", lang="en", plots=False)
    text = next(p for p in paths if ".e2e." in p.name).read_text(encoding="utf-8")
    assert "### Accuracy: what pruning costs" in text and "| 2_8 |" in text
    assert "6:8 keeps far more quality than 2:4" in text


def _cli(*args) -> tuple[int, str]:
    import subprocess
    import sys

    p = subprocess.run(
        [sys.executable, "-m", "slidesparse", *args], capture_output=True, text=True, timeout=120
    )
    return p.returncode, p.stderr.strip()


@pytest.mark.slow
def test_bad_checkpoints_exit_2_with_one_line(tmp_path):
    src = write_tiny(tmp_path / "src", "llama")
    code, err = _cli("convert", str(src), "--sparsity", "2_8", "-o", str(src))
    assert code == 2 and len(err.splitlines()) == 1 and "source folder" in err
    (tmp_path / "exists").mkdir()
    code, err = _cli("convert", str(src), "--sparsity", "2_8", "-o", str(tmp_path / "exists"))
    assert code == 2 and "never overwrites" in err
    # a corrupt shard
    bad = write_tiny(tmp_path / "bad", "llama")
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    code, err = _cli("convert", str(bad), "--sparsity", "2_8", "-o", str(tmp_path / "o1"))
    assert code == 2 and len(err.splitlines()) == 1 and "safetensors" in err
    assert not (tmp_path / "o1").exists()
    # a missing config
    (src / "config.json").rename(tmp_path / "config.json")
    code, err = _cli("convert", str(src), "--sparsity", "2_8", "-o", str(tmp_path / "o2"))
    assert code == 2 and "config.json" in err
    # an unsupported scheme: static activation scales
    static = write_w8a8(tmp_path / "static", "llama", "int8")
    cfg = json.loads((static / "config.json").read_text())
    cfg["quantization_config"]["config_groups"]["group_0"]["input_activations"]["dynamic"] = False
    (static / "config.json").write_text(json.dumps(cfg))
    code, err = _cli("generate", "--model", str(static), "--backend", "w8a8", "--tokens", "1 2")
    assert code == 2 and "static activation scales" in err
    # group quantization
    cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"] = "group"
    (static / "config.json").write_text(json.dumps(cfg))
    code, err = _cli("convert", str(static), "--sparsity", "2_8", "-o", str(tmp_path / "o3"))
    assert code == 2 and "group" in err


def test_a_hub_id_offline_is_one_line(tmp_path, monkeypatch):
    from slidesparse.core.errors import UserError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(UserError, match="offline"):
        convert("nobody-here/no-such-model", tmp_path / "o", "2_8", progress=False)


def test_a_w8a8_source_in_the_other_dtype_is_refused(tmp_path):
    from slidesparse.core.errors import UserError

    src = write_w8a8(tmp_path / "w", "llama", "fp8")
    with pytest.raises(UserError, match="quantize twice"):
        convert(str(src), tmp_path / "o", "2_8", "int8", progress=False)
    extra = {"model.layers.0.mlp.down_proj.input_scale": torch.ones(1)}
    static = write_w8a8(tmp_path / "s", "llama", "int8", extra=extra)
    with pytest.raises(UserError, match="input_scale"):
        build_engine(static, "w8a8", device="cpu", weight_cache=False)
    save_file({"x": torch.ones(1)}, str(tmp_path / "w" / "stray.safetensors"))
