"""The decoder: one ``nn.Module`` for the Llama and Qwen2 families, with shape comments.

B = batch, S = new tokens, T = cache length, H = heads, KV = kv heads, G = H / KV, D =
head_dim. Linear layers are whatever :mod:`slidesparse.engine.linear` module the weights
were prepared for; they see 2-D or 3-D bf16 activations and return bf16.

Prefill runs a whole prompt [B, S] in one forward with torch SDPA (causal), fills the static
KV cache at positions 0..S-1 and returns logits for the last token only. Decode runs one token
per sequence at a position held in a device tensor, so the same step can be captured once in
a CUDA graph and replayed; its attention reads the whole static cache [B, KV, T, D] with
positions past the current one masked, without repeating kv heads.

Numerics follow Hugging Face's Llama/Qwen2 (RMSNorm in fp32 then weight · bf16(x), RoPE
tables computed in fp32 and applied in bf16, SiLU-and-mul in bf16), so the ``bf16`` backend
matches ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` to bf16 rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from slidesparse.engine.config import EngineConfig, rope_inv_freq


class RMSNorm(nn.Module):
    """``weight · bf16(x / rms(x))`` with the statistics in fp32."""

    def __init__(self, weight: torch.Tensor, eps: float):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", weight, persistent=False)  # [hidden]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)

    def add(self, x, d, fused: bool):
        """(h, norm(h)) with h = x + d (x when d is None): the residual add and the norm."""
        if fused:
            from slidesparse.engine import fused as fk

            return fk.add_rmsnorm(x, d, self.weight, self.eps)
        h = x if d is None else x + d
        return h, self(h)


class Rope(nn.Module):
    """cos / sin tables [T_max, D] (fp32 math, stored in the activation dtype)."""

    def __init__(self, cfg: EngineConfig, max_len: int, device, dtype=torch.bfloat16):
        super().__init__()
        inv = rope_inv_freq(cfg).to(device)  # [D/2] fp32
        t = torch.arange(max_len, device=device, dtype=torch.float32)
        freqs = torch.outer(t, inv)  # [T_max, D/2]
        emb = torch.cat([freqs, freqs], dim=-1)  # [T_max, D], HF's half-rotation layout
        self.register_buffer("cos", emb.cos().to(dtype), persistent=False)
        self.register_buffer("sin", emb.sin().to(dtype), persistent=False)

    @staticmethod
    def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [B, heads, S, D] rotated by cos / sin [S, D]."""
        half = x.shape[-1] // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rot * sin


class KVCache(nn.Module):
    """Static key / value buffers [B, KV, T, D] for one batch size and length."""

    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @property
    def batch(self) -> int:
        return self.k.shape[0]

    @property
    def max_len(self) -> int:
        return self.k.shape[2]


class Attention(nn.Module):
    """GQA self-attention with the fused ``qkv_proj`` [(H + 2·KV)·D, hidden]."""

    def __init__(self, cfg: EngineConfig, qkv_proj: nn.Module, o_proj: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.qkv_proj = qkv_proj
        self.o_proj = o_proj
        self.scale = 1.0 / math.sqrt(cfg.head_dim)
        self.cache: KVCache | None = None

    def _qkv(self, x, cos, sin):
        c = self.cfg
        B, S, _ = x.shape
        qkv = self.qkv_proj(x)  # [B, S, (H + 2·KV)·D]
        q, k, v = qkv.split([c.q_size, c.kv_size, c.kv_size], dim=-1)
        q = q.view(B, S, c.heads, c.head_dim).transpose(1, 2)  # [B, H, S, D]
        k = k.view(B, S, c.kv_heads, c.head_dim).transpose(1, 2)  # [B, KV, S, D]
        v = v.view(B, S, c.kv_heads, c.head_dim).transpose(1, 2)  # [B, KV, S, D]
        return Rope.apply(q, cos, sin), Rope.apply(k, cos, sin), v

    def _qkv_fused(self, x, rope, pos0, cache):
        """q [B, H, S, D], k / v [B, KV, S, D] as views of the qkv output, rotated in place
        by one kernel that also writes k / v into ``cache`` at positions pos0 + s."""
        from slidesparse.engine import fused as fk

        c = self.cfg
        B, S, _ = x.shape
        qkv = self.qkv_proj(x).view(B * S, -1)  # [B·S, (H + 2·KV)·D]
        kv = None if cache is None else (cache.k, cache.v)
        fk.rope_(qkv, rope.cos, rope.sin, pos0, S, c.heads, c.kv_heads, c.head_dim, kv)
        q, k, v = qkv.view(B, S, -1).split([c.q_size, c.kv_size, c.kv_size], dim=-1)
        q = q.view(B, S, c.heads, c.head_dim).transpose(1, 2)
        k = k.view(B, S, c.kv_heads, c.head_dim).transpose(1, 2)
        v = v.view(B, S, c.kv_heads, c.head_dim).transpose(1, 2)
        return q, k, v, qkv

    def prefill(self, x, rope, fill_cache: bool = True, fused: bool = False):
        """x [B, S, hidden] at positions 0..S-1 -> [B, S, hidden]; fills the cache if set.

        ``rope``: (cos, sin) [S, D] eager, or (Rope, pos0 [1] zero) fused."""
        c = self.cfg
        B, S, _ = x.shape
        cache = self.cache if fill_cache else None
        if fused:
            q, k, v, _ = self._qkv_fused(x, rope[0], rope[1], cache)
        else:
            q, k, v = self._qkv(x, *rope)
            if cache is not None:
                cache.k[:B, :, :S] = k
                cache.v[:B, :, :S] = v
        o = gqa_sdpa(q, k, v, self.scale)  # [B, H, S, D]
        o = o.transpose(1, 2).reshape(B, S, c.q_size)  # [B, S, H·D] (a view for flash)
        return self.o_proj(o)

    def decode(self, x, rope, pos, valid, fused: bool = False):
        """x [B, 1, hidden] at position ``pos`` [1] -> [B, 1, hidden].

        Eager: ``rope`` is (cos, sin) [1, D] and ``valid`` [T] bool; fused: ``rope`` is the
        Rope module and ``valid`` the additive mask [1, 1, 1, T] of the step."""
        c = self.cfg
        B = x.shape[0]
        g = c.heads // c.kv_heads
        cache = self.cache
        if fused:
            _, _, _, qkv = self._qkv_fused(x, rope, pos, cache)
            q = qkv[:, : c.q_size].view(B, c.kv_heads, g, c.head_dim)  # [B, KV, G, D]
            # One memory-efficient SDPA: the G query heads of a kv head are its query rows.
            o = F.scaled_dot_product_attention(q, cache.k, cache.v, valid, scale=self.scale)
            return self.o_proj(o.reshape(B, 1, c.q_size))
        q, k, v = self._qkv(x, *rope)  # q [B, H, 1, D], k/v [B, KV, 1, D]
        cache.k.index_copy_(2, pos, k)
        cache.v.index_copy_(2, pos, v)
        q = q.view(B, c.kv_heads, g, c.head_dim)  # [B, KV, G, D]: heads of one kv head
        scores = torch.matmul(q, cache.k.transpose(-1, -2)).float() * self.scale  # [B, KV, G, T]
        scores = scores.masked_fill(~valid, float("-inf"))
        p = torch.softmax(scores, dim=-1).to(x.dtype)
        o = torch.matmul(p, cache.v)  # [B, KV, G, D]
        return self.o_proj(o.reshape(B, 1, c.q_size))


_GQA_FLASH: dict[str, bool] = {}


def gqa_sdpa(q, k, v, scale):
    """Causal SDPA of q [B, H, S, D] over k / v [B, KV, S, D].

    On CUDA, SDPA's ``enable_gqa`` lets the flash kernel read each kv head for its G query
    heads, with no [B, H, S, D] copy of k and v; whether this torch's flash kernel takes it
    is probed once (flash only: a silent fall-back to the math kernel would be far slower).
    Elsewhere, or where it does not, the kv heads are expanded first."""
    B, H, S, D = q.shape
    KV = k.shape[1]
    if KV != H and q.is_cuda:
        ok = _GQA_FLASH.get("cuda")
        if ok is not False:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            try:
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                    o = F.scaled_dot_product_attention(
                        q, k, v, is_causal=True, scale=scale, enable_gqa=True
                    )
                _GQA_FLASH["cuda"] = True
                return o
            except RuntimeError:
                _GQA_FLASH["cuda"] = False
    if KV != H:  # [B, KV, S, D] -> [B, H, S, D]: SDPA's flash path wants equal heads
        g = H // KV
        k = k[:, :, None].expand(B, KV, g, S, D).reshape(B, H, S, D)
        v = v[:, :, None].expand(B, KV, g, S, D).reshape(B, H, S, D)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)


class MLP(nn.Module):
    """SiLU-gated MLP with the fused ``gate_up_proj`` [2·inter, hidden]."""

    def __init__(self, gate_up_proj: nn.Module, down_proj: nn.Module):
        super().__init__()
        self.gate_up_proj = gate_up_proj
        self.down_proj = down_proj

    def forward(self, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
        if fused:
            from slidesparse.engine import fused as fk

            gu = self.gate_up_proj
            if hasattr(gu, "route"):  # quantized: it fuses SiLU-and-mul where it can
                return self.down_proj(gu(x, gated=True))
            return self.down_proj(fk.silu_mul(gu(x)))
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # [.., inter] each
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    """Pre-norm decoder block: x + attn(norm(x)), then h + mlp(norm(h)).

    The block takes the residual x and the previous block's pending output d, and returns
    (h, mlp output): each residual add happens inside the next norm (fused on the GPU)."""

    def __init__(self, attn: Attention, mlp: MLP, attn_norm: RMSNorm, mlp_norm: RMSNorm):
        super().__init__()
        self.attn = attn
        self.mlp = mlp
        self.input_layernorm = attn_norm
        self.post_attention_layernorm = mlp_norm

    def prefill(self, x, d, rope, fill_cache: bool = True, fused: bool = False):
        h, n = self.input_layernorm.add(x, d, fused)
        a = self.attn.prefill(n, rope, fill_cache, fused)
        h, n = self.post_attention_layernorm.add(h, a, fused)
        return h, self.mlp(n, fused)

    def decode(self, x, d, rope, pos, valid, fused: bool = False):
        h, n = self.input_layernorm.add(x, d, fused)
        a = self.attn.decode(n, rope, pos, valid, fused)
        h, n = self.post_attention_layernorm.add(h, a, fused)
        return h, self.mlp(n, fused)


class Transformer(nn.Module):
    """Embedding -> blocks -> final norm -> lm_head (tied to the embedding or not)."""

    def __init__(
        self,
        cfg: EngineConfig,
        embed: torch.Tensor,
        blocks: list[Block],
        norm: RMSNorm,
        lm_head: torch.Tensor | None,
        max_len: int,
    ):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("embed", embed, persistent=False)  # [vocab, hidden]
        self.layers = nn.ModuleList(blocks)
        self.norm = norm
        # [vocab, hidden]; the embedding itself when tied
        self.register_buffer("lm_head", embed if lm_head is None else lm_head, persistent=False)
        self.rope = Rope(cfg, max_len, embed.device, embed.dtype)
        self.register_buffer(
            "positions", torch.arange(max_len, device=embed.device), persistent=False
        )
        self.register_buffer(
            "zero_pos", torch.zeros(1, dtype=torch.long, device=embed.device), persistent=False
        )
        # The fused Triton kernels of slidesparse.engine.fused for norm, RoPE and SiLU-and-mul
        # (set by build_engine: on for CUDA; the CPU keeps the eager ops, bitwise equal to HF).
        self.fused = False

    @property
    def max_len(self) -> int:
        return self.positions.shape[0]

    def setup_cache(self, batch: int, max_len: int) -> None:
        """Give every layer a static KV cache [batch, KV, max_len, D] (reused if it fits)."""
        c = self.cfg
        if max_len > self.max_len:
            raise ValueError(f"cache length {max_len} exceeds the RoPE table ({self.max_len})")
        cur = self.layers[0].attn.cache
        if cur is not None and cur.batch == batch and cur.max_len == max_len:
            return
        for layer in self.layers:
            layer.attn.cache = None  # free the old cache before allocating the new one
        for layer in self.layers:
            layer.attn.cache = KVCache(
                batch, c.kv_heads, max_len, c.head_dim, self.embed.dtype, self.embed.device
            )

    def drop_cache(self) -> None:
        for layer in self.layers:
            layer.attn.cache = None

    def _blocks_prefill(self, tokens: torch.Tensor, fill_cache: bool):
        """tokens [B, S] at positions 0..S-1 -> (residual, pending block output) [B, S, hidden]."""
        S = tokens.shape[1]
        fused = self.fused
        # fused: the tables and position 0; eager: cos / sin [S, D]
        rope = (self.rope, self.zero_pos) if fused else (self.rope.cos[:S], self.rope.sin[:S])
        x = F.embedding(tokens, self.embed)  # [B, S, hidden]
        d = None
        for layer in self.layers:
            x, d = layer.prefill(x, d, rope, fill_cache, fused)
        return x, d

    def hidden_prefill(self, tokens: torch.Tensor, fill_cache: bool = True) -> torch.Tensor:
        """tokens [B, S] at positions 0..S-1 -> final-norm hidden [B, S, hidden]."""
        x, d = self._blocks_prefill(tokens, fill_cache)
        return self.norm.add(x, d, self.fused)[1]

    def prefill(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, S] -> logits of the last token [B, vocab]; fills the cache if set."""
        x, d = self._blocks_prefill(tokens, True)
        last = None if d is None else d[:, -1]
        h = self.norm.add(x[:, -1], last, self.fused)[1]  # [B, hidden]: the last token only
        return F.linear(h, self.lm_head)

    def all_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, S] -> logits at every position [B, S, vocab] (tests, comparisons)."""
        return F.linear(self.hidden_prefill(tokens, fill_cache=False), self.lm_head)

    def decode(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """tokens [B] at position ``pos`` [1] (int64, on device) -> logits [B, vocab]."""
        cache_len = self.layers[0].attn.cache.max_len
        valid = self.positions[:cache_len] <= pos  # [T]: positions written so far
        fused = self.fused
        if fused:
            rope = self.rope
            zero = torch.zeros((), dtype=self.embed.dtype, device=pos.device)
            valid = torch.where(valid, zero, float("-inf")).view(1, 1, 1, -1)  # additive
        else:
            rope = (self.rope.cos.index_select(0, pos), self.rope.sin.index_select(0, pos))
        x = F.embedding(tokens[:, None], self.embed)  # [B, 1, hidden]
        d = None
        for layer in self.layers:
            x, d = layer.decode(x, d, rope, pos, valid, fused)
        h = self.norm.add(x[:, 0], None if d is None else d[:, 0], fused)[1]
        return F.linear(h, self.lm_head)

    def linears(self) -> list[tuple[str, nn.Module]]:
        """(name, module) of every linear layer of the blocks, in execution order."""
        out = []
        for i, layer in enumerate(self.layers):
            out += [
                (f"layers.{i}.qkv_proj", layer.attn.qkv_proj),
                (f"layers.{i}.o_proj", layer.attn.o_proj),
                (f"layers.{i}.gate_up_proj", layer.mlp.gate_up_proj),
                (f"layers.{i}.down_proj", layer.mlp.down_proj),
            ]
        return out
