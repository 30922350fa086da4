"""Model registry: the linear-layer shapes (N x K) the benchmarks run, per model.

q/k/v are fused into one ``qkv`` GEMM and gate/up into one ``gate_up`` GEMM, as inference
engines run them. The five paper models are built in; any other Llama/Qwen-style model is read
from a local Hugging Face ``config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from slidesparse.core.errors import UserError

LAYERS = ("qkv", "o", "gate_up", "down")


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer, reduced to what the GEMM and memory estimates need."""

    name: str
    hidden: int
    intermediate: int
    num_layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool

    @property
    def layers(self) -> dict[str, tuple[int, int]]:
        """Layer name -> (N, K) of its weight [N, K]."""
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        return {
            "qkv": (q + 2 * kv, self.hidden),
            "o": (self.hidden, q),
            "gate_up": (2 * self.intermediate, self.hidden),
            "down": (self.hidden, self.intermediate),
        }

    @property
    def linear_params(self) -> int:
        """Weights in all linear layers of all decoder blocks."""
        return self.num_layers * sum(n * k for n, k in self.layers.values())

    @property
    def params(self) -> int:
        """Approximate parameter count (linears + embeddings; norms are negligible)."""
        emb = self.vocab_size * self.hidden
        return self.linear_params + emb * (1 if self.tie_word_embeddings else 2)


def _spec(name, hidden, inter, layers, heads, kv, vocab, tied) -> ModelSpec:
    return ModelSpec(name, hidden, inter, layers, heads, kv, hidden // heads, vocab, tied)


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        _spec("Llama3.2-1B", 2048, 8192, 16, 32, 8, 128256, True),
        _spec("Llama3.2-3B", 3072, 8192, 28, 24, 8, 128256, True),
        _spec("Qwen2.5-7B", 3584, 18944, 28, 28, 4, 152064, False),
        _spec("Qwen2.5-14B", 5120, 13824, 48, 40, 8, 152064, False),
        _spec("BitNet-2B", 2560, 6912, 30, 20, 5, 128256, True),
    )
}


def get_model(name: str) -> ModelSpec:
    """A built-in model by name (case-insensitive; a -INT8/-FP8 or -Instruct suffix is ignored)."""
    key = name.strip().lower()
    for suffix in ("-int8", "-fp8", "-instruct"):
        key = key.removesuffix(suffix)
    for model in MODELS.values():
        if model.name.lower() == key:
            return model
    raise UserError(f"unknown model {name!r}; built-in models: {', '.join(MODELS)}")


def model_from_hf_config(path: str | Path, name: str | None = None) -> ModelSpec:
    """Read a Llama/Qwen-style model from a local HF ``config.json`` (or its folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UserError(f"{p}: no such config.json") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    required = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [k for k in required if k not in cfg]
    if missing:
        raise UserError(f"{p}: not a Llama/Qwen-style config, missing {', '.join(missing)}")
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    return ModelSpec(
        name=name or p.parent.name or "custom",
        hidden=hidden,
        intermediate=int(cfg["intermediate_size"]),
        num_layers=int(cfg["num_hidden_layers"]),
        heads=heads,
        kv_heads=int(cfg.get("num_key_value_heads", heads)),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        vocab_size=int(cfg.get("vocab_size", 0)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )


def resolve_model(name_or_path: str) -> ModelSpec:
    """A built-in model name, or a path to a local HF model folder / config.json."""
    p = Path(name_or_path)
    if p.suffix == ".json" or p.is_dir():
        return model_from_hf_config(p)
    return get_model(name_or_path)
