"""Write a random bf16 Hugging Face checkpoint at a built-in model's real shapes, with a
word-level tokenizer trained on the shipped public-domain text, so that ``convert``, the
engine and ``accuracy`` can be timed end to end without downloading anything.

    python benchmarks/random_checkpoint.py --model Llama3.2-1B -o /tmp/l1b

Random weights give a meaningless perplexity; the point is the pipeline's time and
exactness at real sizes. Prints the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from slidesparse.engine.accuracy import read_text
from slidesparse.engine.config import builtin_config


def hf_config(cfg) -> dict:
    """config.json of a built-in engine config (Llama 3 or Qwen2 style)."""
    out = {
        "architectures": ["LlamaForCausalLM" if cfg.family == "llama" else "Qwen2ForCausalLM"],
        "model_type": cfg.family,
        "hidden_size": cfg.hidden,
        "intermediate_size": cfg.intermediate,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position,
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
    }
    rs = cfg.rope_scaling
    if rs is not None:
        out["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": rs.factor,
            "low_freq_factor": rs.low_freq_factor,
            "high_freq_factor": rs.high_freq_factor,
            "original_max_position_embeddings": rs.original_max_position,
        }
    return out


def tensors(cfg, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """HF-named random bf16 tensors (CPU), N(0, 0.02) weights, unit norms, small biases."""
    g = torch.Generator(device=device).manual_seed(seed)

    def rnd(*shape):
        t = torch.empty(shape, device=device, dtype=torch.bfloat16)
        return t.normal_(0.0, 0.02, generator=g).cpu()

    h, q, kv, inter = cfg.hidden, cfg.q_size, cfg.kv_size, cfg.intermediate
    ones = torch.ones(h, dtype=torch.bfloat16)
    t = {"model.embed_tokens.weight": rnd(cfg.vocab_size, h), "model.norm.weight": ones}
    if not cfg.tie_word_embeddings:
        t["lm_head.weight"] = rnd(cfg.vocab_size, h)
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        shapes = {
            "self_attn.q_proj": (q, h),
            "self_attn.k_proj": (kv, h),
            "self_attn.v_proj": (kv, h),
            "self_attn.o_proj": (h, q),
            "mlp.gate_proj": (inter, h),
            "mlp.up_proj": (inter, h),
            "mlp.down_proj": (h, inter),
        }
        for name, shape in shapes.items():
            t[f"{p}{name}.weight"] = rnd(*shape)
        if cfg.qkv_bias:
            for name, n in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
                t[f"{p}self_attn.{name}.bias"] = rnd(n)
        t[p + "input_layernorm.weight"] = ones.clone()
        t[p + "post_attention_layernorm.weight"] = ones.clone()
    return t


def tokenizer(vocab: int) -> Tokenizer:
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        [read_text(None)[0]], trainers.WordLevelTrainer(vocab_size=vocab, special_tokens=["[UNK]"])
    )
    return tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="Llama3.2-1B")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    t0 = time.perf_counter()
    cfg = builtin_config(args.model)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=False)
    (out / "config.json").write_text(json.dumps(hf_config(cfg), indent=2))
    save_file(tensors(cfg, args.device), str(out / "model.safetensors"))
    tokenizer(cfg.vocab_size).save(str(out / "tokenizer.json"))
    size = (out / "model.safetensors").stat().st_size
    print(f"{out}: {cfg.name} random bf16, {size / 1e9:.2f} GB, {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
