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
from slidesparse.core.dtypes import dtype_name
from slidesparse.core.errors import UserError
from slidesparse.engine.config import EngineConfig

FORMAT_VERSION = 1
LINEARS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
_FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
# Per-module tensors of W8A8 schemes the engine cannot run exactly.
_REFUSED_TENSORS = (
    ("input_scale", "static activation scales"),
    ("weight_zero_point", "asymmetric weights"),
)


# --- sources -------------------------------------------------------------------------------


class HFWeights:
    """Tensors of a local HF Llama/Qwen2 folder, fused, shape-checked, as bf16 on ``device``."""

    def __init__(self, folder: Path, cfg: EngineConfig, device):
        from slidesparse.engine.checkpoint import read_scheme, slid_tensors
        from slidesparse.engine.config import read_hf_config

        self.folder = Path(folder)
        self.cfg = cfg
        self.device = device
        hf_cfg = read_hf_config(self.folder)
        # None: bf16/fp16 linears; else the compressed-tensors W8A8 scheme they are stored in
        self.scheme = read_scheme(hf_cfg, str(self.folder))
        self.pruned_to = (hf_cfg.get("slidesparse") or {}).get("pattern")
        self.files = self._shard_map()  # tensor name -> file
        self._open: dict[Path, object] = {}
        self._slid = slid_tensors(self.folder, device) if self.scheme else {}

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
            try:
                with safe_open(str(path), framework="pt") as f:
                    out.update({k: path for k in f.keys()})  # noqa: SIM118 - no iter
            except Exception as exc:  # truncated, zeroed or not safetensors at all
                raise UserError(
                    f"{path}: not a readable safetensors file ({exc}); download it again"
                ) from None
        return out

    def fingerprint(self) -> str:
        """Files, sizes and mtimes: what the prepared-weight cache key depends on."""
        parts = []
        from slidesparse.engine.checkpoint import SLID_FILE

        extra = [self.folder / SLID_FILE] if self._slid else []
        for path in [*sorted(set(self.files.values())), self.folder / "config.json", *extra]:
            st = path.stat()
            parts.append(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}")
        return "|".join(parts)

    def tensor(self, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Tensor ``name`` as stored (CPU); UserError if absent or not ``shape``."""
        from safetensors import safe_open

        path = self.files.get(name)
        if path is None:
            raise UserError(f"{self.folder}: tensor {name} is missing from the safetensors files")
        f = self._open.get(path)
        if f is None:
            try:
                f = self._open[path] = safe_open(str(path), framework="pt")
            except Exception as exc:  # a truncated or foreign file: name it
                raise UserError(
                    f"{path}: not a readable safetensors file ({exc}); download it again"
                ) from None
        try:
            t = f.get_tensor(name)
        except Exception as exc:
            raise UserError(f"{path}: tensor {name} is unreadable ({exc})") from None
        if shape is not None and tuple(t.shape) != tuple(shape):
            raise UserError(
                f"{self.folder}: tensor {name} has shape {tuple(t.shape)}, the "
                f"config says {tuple(shape)}"
            )
        return t

    def get(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """Tensor ``name`` as bf16 on the device; UserError if absent or the wrong shape."""
        t = self.tensor(name, shape)
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

    def linear(self, modules: list[tuple[str, tuple[int, int] | None]]):
        """The fused weight of ``modules`` [(name, (N, K) or None: unchecked)], along N: bf16
        [sum N, K], or for a W8A8 checkpoint a :class:`~slidesparse.engine.checkpoint.Quantized`
        whose per-channel scales (and slid weights, where stored) are concatenated alike."""
        if self.scheme is None:
            return torch.cat([self.get(f"{m}.weight", shape) for m, shape in modules])
        from slidesparse.engine.checkpoint import QDTYPE_OF, Quantized

        qdtype = QDTYPE_OF[self.scheme.dtype]
        qs, scales, slids = [], [], []
        for m, shape in modules:
            for extra, what in _REFUSED_TENSORS:
                if self.has(f"{m}.{extra}"):
                    raise UserError(f"{self.folder}: {m}.{extra}: {what} are not supported")
            q = self.tensor(f"{m}.weight", shape)
            if q.dtype != qdtype:
                raise UserError(
                    f"{self.folder}: {m}.weight is {q.dtype}; the config says "
                    f"{self.scheme.dtype} W8A8"
                )
            scale = self.tensor(f"{m}.weight_scale", None)
            if scale.numel() != q.shape[0] or not scale.is_floating_point():
                raise UserError(
                    f"{self.folder}: {m}.weight_scale has {scale.numel()} {scale.dtype} "
                    f"values for {q.shape[0]} output channels; W8A8 needs one float per channel"
                )
            qs.append(q.to(self.device))
            scales.append(scale.float().reshape(-1).to(self.device))
            slids.append(self._slid.get(f"{m}.weight_slid"))
        slid = torch.cat(slids) if slids and all(t is not None for t in slids) else None
        return Quantized(
            torch.cat(qs), torch.cat(scales), slid, self.pruned_to if slid is not None else None
        )

    def layer(self, i: int) -> dict:
        """Layer ``i``: norms, fused linear weights [N, K] (bf16, or
        :class:`~slidesparse.engine.checkpoint.Quantized`) and the qkv bias (or None)."""
        c = self.cfg
        p = f"model.layers.{i}."
        q, kv, h, inter = c.q_size, c.kv_size, c.hidden, c.intermediate
        attn, mlp = p + "self_attn.", p + "mlp."
        out = {
            "input_layernorm": self.get(p + "input_layernorm.weight", (h,)),
            "post_attention_layernorm": self.get(p + "post_attention_layernorm.weight", (h,)),
            "qkv_proj": self.linear(
                [(attn + "q_proj", (q, h)), (attn + "k_proj", (kv, h)), (attn + "v_proj", (kv, h))]
            ),
            "o_proj": self.linear([(attn + "o_proj", (h, q))]),
            "gate_up_proj": self.linear(
                [(mlp + "gate_proj", (inter, h)), (mlp + "up_proj", (inter, h))]
            ),
            "down_proj": self.linear([(mlp + "down_proj", (h, inter))]),
            "qkv_bias": None,
        }
        if c.qkv_bias:
            out["qkv_bias"] = torch.cat(
                [
                    self.get(attn + "q_proj.bias", (q,)),
                    self.get(attn + "k_proj.bias", (kv,)),
                    self.get(attn + "v_proj.bias", (kv,)),
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
    # GEMM kinds of engine_mm (cpu-ref, cublaslt, cusparselt, cutlass, ...): the weight is
    # kept in each one's form (--gemm auto: two, the router picks per layer shape and M)
    kinds: tuple[str, ...]
    require_pruned: bool = False

    def cache_tag(self) -> str:
        q = "none" if self.qdtype is None else dtype_name(self.qdtype)
        kinds = "+".join(self.kinds)
        return f"v{FORMAT_VERSION}|{self.backend}|{q}|{self.pattern}|{self.prune}|{kinds}"


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


def convert_linear(w, plan: LinearPlan, name: str) -> dict[str, torch.Tensor]:
    """One weight -> the tensors its backend keeps: ``weight`` (+ ``w_scale``).

    ``w`` is bf16 [N, K], or a checkpoint's already quantized
    :class:`~slidesparse.engine.checkpoint.Quantized`: then its values and scales are kept
    as they are (pruning zeroes quantized values; a per-channel scale does not change which
    are smallest), and stored slid weights of the same pattern skip the slide."""
    from slidesparse.engine.checkpoint import Quantized
    from slidesparse.engine.linear import quantize_weight

    if plan.backend == "bf16":
        bf16 = w.dequantize() if isinstance(w, Quantized) else w
        return {"weight": prune_or_check(bf16, plan, name)}
    if isinstance(w, Quantized):
        if w.q.dtype != plan.qdtype:
            have = "INT8" if w.q.dtype == torch.int8 else "FP8"
            raise UserError(
                f"{name} is a {have} W8A8 checkpoint; run it with --dtype {have.lower()}"
            )
        slid = w.slid if w.pattern == plan.pattern and w.pattern is not None else None
        if slid is not None and plan.prune not in (None, "dense"):
            # Stored slid weights are only valid for the pruned values they came from.
            prune_or_check(w.q, LinearPlan(**{**plan.__dict__, "require_pruned": True}), name)
            return pack_linear(w.q, w.scale, plan, slid)
        return pack_linear(prune_or_check(w.q, plan, name), w.scale, plan)
    q, scale = quantize_weight(prune_or_check(w, plan, name), plan.qdtype)  # [N, K], [N]
    return pack_linear(q, scale, plan)


def pack_linear(q: torch.Tensor, scale: torch.Tensor, plan: LinearPlan, slid=None) -> dict:
    """Quantized q [N, K] (pruned as ``plan`` asks) and its scale [N] -> the backend's form:
    K padded for w8a8 (one tensor every dense kind reads); for slidesparse, slid (or the
    given ``slid`` [N, K_slide]) and compressed for each kind: ``weight`` (+ ``meta``) for
    the first, ``weight.<kind>`` (+ ``meta.<kind>``) for the others (:func:`forms_of`)."""
    from slidesparse.core import sparsity
    from slidesparse.kernels import numerics

    N, K = q.shape
    if plan.backend == "w8a8":
        k_pad = numerics.ceil_to(K, numerics.K_ALIGN)  # quant_only pads K to 32
        if k_pad != K:
            q = torch.cat([q, q.new_zeros((N, k_pad - K))], dim=1)
        return {"weight": q.contiguous(), "w_scale": scale}
    if slid is None:
        slid = sparsity.slide_weight(q, plan.pattern)
    slid = slid.contiguous()  # [N, K_slide], 2:4
    out = {"w_scale": scale}
    for i, kind in enumerate(plan.kinds):
        sfx = _suffix(i, kind)
        w, meta = _sparse_form(slid, kind)
        out[f"weight{sfx}"] = w
        if meta is not None:
            out[f"meta{sfx}"] = meta
    return out


def _suffix(i: int, kind: str) -> str:
    # The first kind's tensors keep the plain names, so single-kind caches read as before.
    return "" if i == 0 else f".{kind}"


def _sparse_form(slid: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A slid 2:4 weight [N, K_slide] as GEMM ``kind`` reads it: (weight, 2:4 metadata)."""
    from slidesparse.engine.algos import ENGINE_A_LAYOUT

    if kind == "cusparselt":
        from slidesparse.native import ops

        return ops.cusparselt_compress(slid, ENGINE_A_LAYOUT), None  # [bytes] uint8
    if kind == "torch-cslt":
        return torch._cslt_compress(slid), None
    if kind == "cutlass-sparse":
        from slidesparse.native import cutlass

        return cutlass.compress(cutlass.family(dtype_name(slid.dtype), True), slid)
    return slid, None


def forms_of(t: dict, kinds: tuple[str, ...]) -> dict:
    """kind -> (weight, meta) from :func:`pack_linear`'s tensors (dense: one shared weight)."""
    forms = {}
    for i, kind in enumerate(kinds):
        sfx = _suffix(i, kind)
        w = t.get(f"weight{sfx}", t["weight"])
        forms[kind] = (w, t.get(f"meta{sfx}"))
    return forms


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
