"""The engine's model config: a Llama or Qwen2 decoder, from a built-in name or a config.json.

Two families fit one decoder (:mod:`slidesparse.engine.model`): Llama (3.x, with the
``llama3`` RoPE scaling) and Qwen2 (Qwen2.5: bias on q/k/v, larger RoPE theta). Both are
pre-norm blocks of RMSNorm -> GQA attention -> RMSNorm -> SiLU-gated MLP, so the only
differences are numbers and the q/k/v bias.

BitNet-2B (BitNet b1.58 2B4T) is refused. Its GEMM shapes are in the kernel matrix, but its
block is a different computation: an extra RMSNorm before ``o_proj`` and another before
``down_proj`` (sub-norms), a squared-ReLU gate instead of SiLU, and checkpoints whose linear
weights are ternary {-1, 0, 1} with one absmean scale per tensor and 8-bit absmax
activations. Running its shapes through this decoder would time a model nobody ships, and its
ternary weights are not a magnitude-pruned (L-2):L checkpoint; a faithful engine needs its own
block and quantizer (see the message of :func:`builtin_config`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from slidesparse.core.errors import UserError
from slidesparse.core.models import ModelSpec, get_model

FAMILIES = ("llama", "qwen2")
_ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
_BITNET_REASON = (
    "BitNet-2B is not supported by the engine: its blocks add RMSNorms before o_proj and "
    "down_proj, gate with relu² instead of SiLU, and its weights are ternary with per-tensor "
    "absmean scales, so a Llama decoder would time a different model; its GEMM shapes run in "
    "'slidesparse bench gemm --model BitNet-2B'"
)


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3's frequency-dependent RoPE scaling (``rope_type: llama3``)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position: int


@dataclass(frozen=True)
class EngineConfig:
    """Everything the decoder needs: the model's shapes plus what only a forward pass uses.

    The shapes (hidden, intermediate, layers, heads, kv heads, head_dim, vocab, tied
    embeddings) are the model registry's :class:`~slidesparse.core.models.ModelSpec`, read
    through this object (``cfg.hidden``), so the engine and the kernel matrix share one
    definition of every model.
    """

    spec: ModelSpec
    family: str  # "llama" | "qwen2"
    rms_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None
    qkv_bias: bool
    max_position: int

    def __getattr__(self, name: str):
        # Only reached for names this class lacks: the shape fields of the spec.
        if name == "spec":
            raise AttributeError(name)
        return getattr(self.spec, name)

    @property
    def q_size(self) -> int:
        return self.spec.heads * self.spec.head_dim

    @property
    def kv_size(self) -> int:
        return self.spec.kv_heads * self.spec.head_dim

    @property
    def layer_shapes(self) -> dict[str, tuple[int, int]]:
        """Linear name -> (N, K): the fused layer shapes of the kernel matrix."""
        layers = self.spec.layers
        return {f"{k}_proj": layers[k] for k in ("qkv", "o", "gate_up", "down")}


LLAMA3_SCALING = RopeScaling(32.0, 1.0, 4.0, 8192)

# What a forward pass needs beyond the registry's shapes, per built-in model:
# (family, rms_norm_eps, rope_theta, rope_scaling, qkv bias, max_position_embeddings).
# Qwen2.5-14B's config.json says rms_norm_eps 1e-05, unlike the 7B's 1e-06.
_BUILTIN_FORWARD = {
    "Llama3.2-1B": ("llama", 1e-5, 500000.0, LLAMA3_SCALING, False, 131072),
    "Llama3.2-3B": ("llama", 1e-5, 500000.0, LLAMA3_SCALING, False, 131072),
    "Qwen2.5-7B": ("qwen2", 1e-6, 1000000.0, None, True, 32768),
    "Qwen2.5-14B": ("qwen2", 1e-5, 1000000.0, None, True, 32768),
}


def _builtin() -> dict[str, EngineConfig]:
    return {name: EngineConfig(get_model(name), *fwd) for name, fwd in _BUILTIN_FORWARD.items()}


BUILTIN = _builtin()


def builtin_config(name: str) -> EngineConfig:
    """A built-in model by name (case-insensitive; -Instruct / -INT8 / -FP8 suffixes ignored)."""
    key = name.strip().lower()
    for suffix in ("-int8", "-fp8", "-instruct"):
        key = key.removesuffix(suffix)
    if key == "bitnet-2b":
        raise UserError(_BITNET_REASON)
    for cfg in BUILTIN.values():
        if cfg.name.lower() == key:
            return cfg
    raise UserError(
        f"unknown model {name!r}; built-in engine models: {', '.join(BUILTIN)} "
        "(or a local folder with config.json)"
    )


def _family(cfg: dict, where: str) -> str:
    archs = cfg.get("architectures") or []
    for a in archs:
        if a in _ARCHITECTURES:
            return _ARCHITECTURES[a]
    mt = str(cfg.get("model_type", ""))
    if mt in FAMILIES:
        return mt
    what = ", ".join(archs) or mt or "unknown"
    if "bitnet" in what.lower():
        raise UserError(f"{where}: {_BITNET_REASON}")
    raise UserError(
        f"{where}: unsupported architecture {what}; the engine runs LlamaForCausalLM and "
        "Qwen2ForCausalLM"
    )


def _rope_scaling(cfg: dict, where: str) -> RopeScaling | None:
    rs = cfg.get("rope_scaling")
    if not rs:
        return None
    kind = rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return None
    if kind != "llama3":
        raise UserError(
            f"{where}: rope_scaling type {kind!r} is not supported; the engine "
            "implements llama3 scaling only"
        )
    try:
        return RopeScaling(
            float(rs["factor"]),
            float(rs.get("low_freq_factor", 1.0)),
            float(rs.get("high_freq_factor", 4.0)),
            int(rs["original_max_position_embeddings"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{where}: bad llama3 rope_scaling {rs!r} ({exc})") from None


def config_from_hf(cfg: dict, name: str = "custom", where: str = "config.json") -> EngineConfig:
    """An :class:`EngineConfig` from a parsed Hugging Face ``config.json`` dict."""
    family = _family(cfg, where)
    required = (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
    )
    missing = [k for k in required if k not in cfg]
    if missing:
        raise UserError(f"{where}: missing {', '.join(missing)}")
    if cfg.get("hidden_act", "silu") != "silu":
        raise UserError(f"{where}: hidden_act {cfg['hidden_act']!r} is not supported (silu only)")
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    kv = int(cfg.get("num_key_value_heads") or heads)
    if heads % kv:
        raise UserError(f"{where}: {heads} attention heads are not a multiple of {kv} kv heads")
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    if head_dim % 2:
        raise UserError(f"{where}: head_dim {head_dim} must be even for RoPE")
    if family == "llama":
        qkv_bias = bool(cfg.get("attention_bias", False))
        if cfg.get("mlp_bias"):
            raise UserError(f"{where}: mlp_bias is not supported")
    else:
        qkv_bias = True
    spec = ModelSpec(
        name=name,
        hidden=hidden,
        intermediate=int(cfg["intermediate_size"]),
        num_layers=int(cfg["num_hidden_layers"]),
        heads=heads,
        kv_heads=kv,
        head_dim=head_dim,
        vocab_size=int(cfg["vocab_size"]),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )
    return EngineConfig(
        spec,
        family=family,
        rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rope_scaling=_rope_scaling(cfg, where),
        qkv_bias=qkv_bias,
        max_position=int(cfg.get("max_position_embeddings", 4096)),
    )


def read_hf_config(folder: str | Path) -> dict:
    """The parsed ``config.json`` of a local model folder (UserError if absent or broken)."""
    p = Path(folder)
    path = p if p.suffix == ".json" else p / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such config.json") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def resolve_config(name_or_path: str | Path) -> tuple[EngineConfig, Path | None]:
    """(config, model folder or None): a local folder / config.json, else a built-in name."""
    p = Path(name_or_path)
    if p.is_dir() or p.suffix == ".json":
        folder = p if p.is_dir() else p.parent
        cfg = config_from_hf(read_hf_config(p), folder.name or "custom", str(folder))
        return cfg, folder
    return builtin_config(str(name_or_path)), None


def rope_inv_freq(cfg: EngineConfig):
    """Inverse frequencies [head_dim / 2] fp32, with Llama 3 scaling applied where configured.

    Llama 3 scaling keeps high frequencies (wavelength < orig / high_freq_factor), divides
    low ones (wavelength > orig / low_freq_factor) by ``factor``, and interpolates between.
    """
    import torch

    d = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    rs = cfg.rope_scaling
    if rs is None:
        return inv
    low_wl = rs.original_max_position / rs.low_freq_factor
    high_wl = rs.original_max_position / rs.high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wl, inv / rs.factor, inv)
    smooth = (rs.original_max_position / wavelen - rs.low_freq_factor) / (
        rs.high_freq_factor - rs.low_freq_factor
    )
    mid = (1 - smooth) * scaled / rs.factor + smooth * scaled
    is_mid = (wavelen >= high_wl) & (wavelen <= low_wl)
    return torch.where(is_mid, mid, scaled)
