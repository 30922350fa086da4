"""A tiny Llama / Qwen2 checkpoint written as config.json + safetensors (what HF would save)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Every K and N of the tiny model (multiples of 32, as the quant kernels' padding likes).
HIDDEN, INTER, HEADS, KV_HEADS, HEAD_DIM, VOCAB, LAYERS = 64, 128, 4, 2, 16, 256, 2
TINY_SIZES = (64, 128, 256)
PATTERNS = ("2_4", "2_6", "2_8", "2_10")


def hf_config(family: str) -> dict:
    cfg = {
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "vocab_size": VOCAB,
        "max_position_embeddings": 256,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
    }
    if family == "llama":
        cfg.update(
            architectures=["LlamaForCausalLM"],
            model_type="llama",
            rms_norm_eps=1e-5,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            tie_word_embeddings=True,
            attention_bias=False,
        )
    else:
        cfg.update(
            architectures=["Qwen2ForCausalLM"],
            model_type="qwen2",
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            tie_word_embeddings=False,
        )
    return cfg


def hf_tensors(family: str, seed: int = 0, prune: str | None = None) -> dict[str, torch.Tensor]:
    """HF-named bf16 tensors; ``prune`` prunes every linear weight to that pattern."""
    from slidesparse.core import sparsity

    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=0.08):
        return (torch.randn(*shape, generator=g) * std).to(torch.bfloat16)

    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    t = {
        "model.embed_tokens.weight": rnd(VOCAB, HIDDEN, std=0.05),
        "model.norm.weight": (1 + rnd(HIDDEN, std=0.1)),
    }
    if family == "qwen2":
        t["lm_head.weight"] = rnd(VOCAB, HIDDEN, std=0.05)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        lin = {
            "self_attn.q_proj": (q, HIDDEN),
            "self_attn.k_proj": (kv, HIDDEN),
            "self_attn.v_proj": (kv, HIDDEN),
            "self_attn.o_proj": (HIDDEN, q),
            "mlp.gate_proj": (INTER, HIDDEN),
            "mlp.up_proj": (INTER, HIDDEN),
            "mlp.down_proj": (HIDDEN, INTER),
        }
        for name, shape in lin.items():
            w = rnd(*shape, std=2 * shape[1] ** -0.5)
            t[p + name + ".weight"] = sparsity.prune(w, prune) if prune else w
        if family == "qwen2":
            t[p + "self_attn.q_proj.bias"] = rnd(q, std=0.1)
            t[p + "self_attn.k_proj.bias"] = rnd(kv, std=0.1)
            t[p + "self_attn.v_proj.bias"] = rnd(kv, std=0.1)
        t[p + "input_layernorm.weight"] = 1 + rnd(HIDDEN, std=0.1)
        t[p + "post_attention_layernorm.weight"] = 1 + rnd(HIDDEN, std=0.1)
    return t


def write_tiny(
    folder: Path, family: str, *, seed: int = 0, prune: str | None = None, shards: int = 1
) -> Path:
    """Write the tiny checkpoint into ``folder`` (one file, or ``shards`` with an index)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config(family)))
    tensors = hf_tensors(family, seed, prune)
    if shards == 1:
        save_file(tensors, str(folder / "model.safetensors"))
        return folder
    names = sorted(tensors)
    wmap = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        save_file(part, str(folder / fname))
        wmap.update({n: fname for n in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))
    return folder


def write_tokenizer(folder: Path, vocab: int = VOCAB) -> Path:
    """A word-level ``tokenizer.json`` trained offline on the shipped text (ids < ``vocab``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from slidesparse.engine.accuracy import read_text

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab, special_tokens=["[UNK]"])
    tok.train_from_iterator([read_text(None)[0]], trainer)
    tok.save(str(Path(folder) / "tokenizer.json"))
    return Path(folder)


def write_w8a8(folder: Path, family: str, dtype: str, *, seed: int = 0, extra=None) -> Path:
    """The tiny checkpoint in the compressed-tensors W8A8 layout, with the real key names
    (``<module>.weight`` quantized per channel, ``<module>.weight_scale`` [N, 1])."""
    from safetensors.torch import save_file

    from slidesparse.engine.checkpoint import QDTYPE_OF, quantization_config
    from slidesparse.engine.linear import quantize_weight

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {**hf_config(family), "quantization_config": quantization_config(dtype)}
    (folder / "config.json").write_text(json.dumps(cfg))
    out = {}
    for name, t in hf_tensors(family, seed).items():
        if name.startswith("model.layers.") and name.endswith("_proj.weight"):
            q, scale = quantize_weight(t, QDTYPE_OF[dtype])
            out[name] = q
            out[name.removesuffix("weight") + "weight_scale"] = scale.reshape(-1, 1)
        else:
            out[name] = t
    out.update(extra or {})
    save_file(out, str(folder / "model.safetensors"))
    return folder
