"""Weights for the engine: a local Hugging Face folder or random tensors at real shapes, then
converted once into the form each linear backend runs.

Sources yield bf16 tensors in the engine's fused layout, one layer at a time (so a large
model never holds two copies): ``qkv_proj`` = cat(q, k, v) [(H + 2·KV)·D, hidden] and
``gate_up_proj`` = cat(gate, up) [2·inter, hidden].

* :class:`HFWeights`: ``config.json`` + ``*.safetensors`` (one file, or shards listed by
  ``model.safetensors.index.json``), bf16 or fp16, read with safetensors.
* :class:`RandomWeights`: N(0, 0.02) at a built-in model's shapes, generated on the device.

Quantized backends prune to the pattern by magnitude along K (or, with ``require_pruned``,
check that the checkpoint already is), quantize per output channel, then slide and compress
(slidesparse) or pad K (w8a8). For checkpoints the result is cached on disk under the GPU
tag (``<cache>/<tag>/engine_weights/<key>.safetensors``, written to a temp file then
written atomically), keyed by the checkpoint's files, backend, dtype, pattern and GEMM kind. Random
weights are not cached: regenerating them on the GPU takes seconds, writing tens of GB would not.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from slidesparse.core.atomic import atomic_write
from slidesparse.core.errors import UserError
from slidesparse.engine.config import EngineConfig

FORMAT_VERSION = 1
LINEARS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
_FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


# --- sources -------------------------------------------------------------------------------


class HFWeights:
    """Tensors of a local HF Llama/Qwen2 folder, fused, shape-checked, as bf16 on ``device``."""

    def __init__(self, folder: Path, cfg: EngineConfig, device):
        self.folder = Path(folder)
        self.cfg = cfg
        self.device = device
        self.files = self._shard_map()  # tensor name -> file
        self._open: dict[Path, object] = {}

    def _shard_map(self) -> dict[str, Path]:
        from safetensors import safe_open

        index = self.folder / "model.safetensors.index.json"
        if index.is_file():
            try:
                wmap = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as exc:
                raise UserError(f"{index}: not a safetensors index ({exc})") from None
            out = {}
            for name, fname in wmap.items():
                path = self.folder / fname
                if not path.is_file():
                    raise UserError(
                        f"{self.folder}: shard {fname} listed in {index.name} is missing"
                    )
                out[name] = path
            return out
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            raise UserError(f"{self.folder}: no *.safetensors files")
        out = {}
        for path in files:
            with safe_open(str(path), framework="pt") as f:
                out.update({k: path for k in f.keys()})  # noqa: SIM118 - safe_open has no iter
        return out

    def fingerprint(self) -> str:
        """Files, sizes and mtimes: what the prepared-weight cache key depends on."""
        parts = []
        for path in [*sorted(set(self.files.values())), self.folder / "config.json"]:
            st = path.stat()
            parts.append(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}")
        return "|".join(parts)

    def get(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """Tensor ``name`` as bf16 on the device; UserError if absent or the wrong shape."""
        from safetensors import safe_open

        path = self.files.get(name)
        if path is None:
            raise UserError(f"{self.folder}: tensor {name} is missing from the safetensors files")
        f = self._open.get(path)
        if f is None:
            f = self._open[path] = safe_open(str(path), framework="pt")
        t = f.get_tensor(name)
        if tuple(t.shape) != tuple(shape):
            raise UserError(
                f"{self.folder}: tensor {name} has shape {tuple(t.shape)}, the "
                f"config says {tuple(shape)}"
            )
        if t.dtype not in _FLOAT_DTYPES:
            raise UserError(
                f"{self.folder}: tensor {name} is {t.dtype}; the engine reads "
                "bf16/fp16/fp32 checkpoints"
            )
        return t.to(self.device, torch.bfloat16)

    def has(self, name: str) -> bool:
        return name in self.files

    def embed(self) -> torch.Tensor:
        c = self.cfg
        return self.get("model.embed_tokens.weight", (c.vocab_size, c.hidden))

    def final_norm(self) -> torch.Tensor:
        return self.get("model.norm.weight", (self.cfg.hidden,))

    def lm_head(self) -> torch.Tensor | None:
        c = self.cfg
        if c.tie_word_embeddings:
            return None
        return self.get("lm_head.weight", (c.vocab_size, c.hidden))

    def layer(self, i: int) -> dict[str, torch.Tensor | None]:
        """Layer ``i``: norms, fused linear weights [N, K] and the qkv bias (or None)."""
        c = self.cfg
        p = f"model.layers.{i}."
        q, kv, h, inter = c.q_size, c.kv_size, c.hidden, c.intermediate
        out = {
            "input_layernorm": self.get(p + "input_layernorm.weight", (h,)),
            "post_attention_layernorm": self.get(p + "post_attention_layernorm.weight", (h,)),
            "qkv_proj": torch.cat(
                [
                    self.get(p + "self_attn.q_proj.weight", (q, h)),
                    self.get(p + "self_attn.k_proj.weight", (kv, h)),
                    self.get(p + "self_attn.v_proj.weight", (kv, h)),
                ]
            ),
            "o_proj": self.get(p + "self_attn.o_proj.weight", (h, q)),
            "gate_up_proj": torch.cat(
                [
                    self.get(p + "mlp.gate_proj.weight", (inter, h)),
                    self.get(p + "mlp.up_proj.weight", (inter, h)),
                ]
            ),
            "down_proj": self.get(p + "mlp.down_proj.weight", (h, inter)),
            "qkv_bias": None,
        }
        if c.qkv_bias:
            out["qkv_bias"] = torch.cat(
                [
                    self.get(p + "self_attn.q_proj.bias", (q,)),
                    self.get(p + "self_attn.k_proj.bias", (kv,)),
                    self.get(p + "self_attn.v_proj.bias", (kv,)),
                ]
            )
        return out


class RandomWeights:
    """N(0, 0.02) weights (ones for norms) at ``cfg``'s shapes, generated on ``device``."""

    def __init__(self, cfg: EngineConfig, device, seed: int = 0):
        self.cfg = cfg
        self.device = device
        self.seed = seed

    def _randn(self, shape, salt: int) -> torch.Tensor:
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed * 1_000_003 + salt)
        t = torch.empty(shape, device=self.device, dtype=torch.bfloat16)
        return t.normal_(0.0, 0.02, generator=g)

    def fingerprint(self) -> str:
        return f"random:{self.cfg.name}:{self.seed}"

    def embed(self) -> torch.Tensor:
        return self._randn((self.cfg.vocab_size, self.cfg.hidden), 1)

    def final_norm(self) -> torch.Tensor:
        return torch.ones(self.cfg.hidden, device=self.device, dtype=torch.bfloat16)

    def lm_head(self) -> torch.Tensor | None:
        c = self.cfg
        return None if c.tie_word_embeddings else self._randn((c.vocab_size, c.hidden), 2)

    def layer(self, i: int) -> dict[str, torch.Tensor | None]:
        c = self.cfg
        ones = torch.ones(c.hidden, device=self.device, dtype=torch.bfloat16)
        out: dict[str, torch.Tensor | None] = {
            "input_layernorm": ones,
            "post_attention_layernorm": ones.clone(),
            "qkv_bias": self._randn((c.q_size + 2 * c.kv_size,), 100 * i + 9)
            if c.qkv_bias
            else None,
        }
        for j, (name, (N, K)) in enumerate(c.layer_shapes.items()):
            out[name] = self._randn((N, K), 100 * i + 10 + j)
        return out


# --- conversion ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearPlan:
    """How every linear of one engine is prepared."""

    backend: str  # "bf16" | "w8a8" | "slidesparse"
    qdtype: torch.dtype | None  # int8 / float8_e4m3fn for the quantized backends
    pattern: str | None  # slidesparse: the 2_L pattern run on cuSPARSELt
    prune: str | None  # pattern the weights are pruned to (slidesparse: == pattern)
    kind: str  # GEMM backend of engine_mm (cpu-ref, cublaslt, cusparselt, ...)
    require_pruned: bool = False

    def cache_tag(self) -> str:
        q = {torch.int8: "int8", torch.float8_e4m3fn: "fp8"}.get(self.qdtype, "none")
        return f"v{FORMAT_VERSION}|{self.backend}|{q}|{self.pattern}|{self.prune}|{self.kind}"


def prune_or_check(w: torch.Tensor, plan: LinearPlan, name: str) -> torch.Tensor:
    """``w`` pruned to ``plan.prune`` by magnitude along K, or checked when it must be already."""
    from slidesparse.core import sparsity

    if plan.prune is None or plan.prune in ("dense", "2_inf"):
        return w
    if plan.require_pruned:
        if not sparsity.check_pattern(w, plan.prune):
            raise UserError(
                f"{name} is not pruned to {plan.prune}; drop --require-pruned to "
                "prune by magnitude on load"
            )
        return w
    return sparsity.prune(w, plan.prune, method="magnitude")


def convert_linear(w: torch.Tensor, plan: LinearPlan, name: str) -> dict[str, torch.Tensor]:
    """One bf16 weight [N, K] -> the tensors its backend keeps: ``weight`` (+ ``w_scale``)."""
    from slidesparse.core import sparsity
    from slidesparse.engine.algos import ENGINE_A_LAYOUT
    from slidesparse.engine.linear import quantize_weight
    from slidesparse.kernels import numerics

    if plan.backend == "bf16":
        return {"weight": prune_or_check(w, plan, name)}
    q, scale = quantize_weight(prune_or_check(w, plan, name), plan.qdtype)  # [N, K], [N]
    N, K = q.shape
    if plan.backend == "w8a8":
        k_pad = numerics.ceil_to(K, numerics.K_ALIGN)  # quant_only pads K to 32
        if k_pad != K:
            q = torch.cat([q, q.new_zeros((N, k_pad - K))], dim=1)
        return {"weight": q.contiguous(), "w_scale": scale}
    slid = sparsity.slide_weight(q, plan.pattern).contiguous()  # [N, K_slide], 2:4
    if plan.kind == "cusparselt":
        from slidesparse.native import ops

        slid = ops.cusparselt_compress(slid, ENGINE_A_LAYOUT)  # [bytes] uint8
    elif plan.kind == "torch-cslt":
        slid = torch._cslt_compress(slid)
    return {"weight": slid, "w_scale": scale}


class PreparedCache:
    """Prepared linear tensors of one (checkpoint, plan), as one safetensors file per key."""

    def __init__(self, root: Path | str, gpu_tag: str, fingerprint: str, plan: LinearPlan):
        key = hashlib.sha256(f"{fingerprint}|{plan.cache_tag()}".encode()).hexdigest()[:24]
        self.path = Path(root) / gpu_tag / "engine_weights" / f"{key}.safetensors"
        self.meta = {"fingerprint": fingerprint, "plan": plan.cache_tag()}

    def load(self, device) -> dict[str, torch.Tensor] | None:
        from safetensors.torch import load_file

        if not self.path.is_file():
            return None
        try:
            return load_file(str(self.path), device=str(device))
        except Exception:  # a truncated or foreign file is rebuilt, not trusted
            return None

    def save(self, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        atomic_write(self.path, lambda tmp: save_file(cpu, tmp, metadata=self.meta))
