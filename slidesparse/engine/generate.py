"""Build an engine and run it: prefill in one forward, greedy decode one replay per token.

:func:`build_engine` resolves the model (built-in name or local folder), loads or generates
the weights, converts every linear for the chosen backend (``bf16``, ``w8a8`` or
``slidesparse`` at 2_L) and returns an :class:`Engine`.

Decode state lives on the device: the current token per sequence ``tok`` [B], the position
``pos`` [1], and the token history ``hist`` [B, T + 1]. One step computes the logits of
``tok`` at ``pos``, takes the argmax, advances ``pos`` and writes the new token into ``tok``
and ``hist`` - all inside the step, so on a GPU the step is captured once per (batch, cache
length) as a CUDA graph and the host's cost per token is one ``replay()``. On a CPU the same
step runs eagerly.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from slidesparse.core.errors import UserError
from slidesparse.engine import linear as lin
from slidesparse.engine import sizing
from slidesparse.engine.config import EngineConfig, resolve_config
from slidesparse.engine.model import MLP, Attention, Block, RMSNorm, Transformer
from slidesparse.engine.weights import (
    LINEARS,
    HFWeights,
    LinearPlan,
    PreparedCache,
    RandomWeights,
    convert_linear,
    forms_of,
)

QDTYPES = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}


@dataclass(frozen=True)
class EngineInfo:
    """What an engine runs, for result rows and messages."""

    model: str
    backend: str
    dtype: str | None
    sparsity: str | None
    prune: str | None
    gemm: str | None  # GEMM kinds of the quantized linears, "+"-joined (auto: two)
    device: str
    gpu_tag: str | None
    weights: str  # "random" or the folder


def _check_backend(backend: str, dtype: str, sparsity: str | None) -> tuple[str | None, str]:
    """(canonical slide pattern or None, canonical prune pattern) of a backend choice."""
    from slidesparse.core.sparsity import parse_pattern

    if backend not in lin.BACKENDS:
        raise UserError(f"unknown engine backend {backend!r}; valid: {', '.join(lin.BACKENDS)}")
    if backend != "bf16" and dtype not in QDTYPES:
        raise UserError(f"engine dtype {dtype!r} is not supported; valid: int8, fp8")
    p = parse_pattern(sparsity or "dense")
    if backend == "slidesparse":
        if p.is_dense:
            raise UserError(
                "backend slidesparse needs --sparsity 2_L (e.g. 2_8); dense runs on backend w8a8"
            )
        return p.name, p.name
    return None, p.name


def _ensure_interpreter() -> None:
    """On a CPU the quant kernels run in Triton's interpreter, which must be on before import."""
    from slidesparse.kernels import numerics

    if numerics.interpreting():
        return
    if "triton" in sys.modules:
        raise UserError(
            "the quantized backends on CPU need TRITON_INTERPRET=1 set before "
            "triton is imported; rerun with TRITON_INTERPRET=1"
        )
    os.environ["TRITON_INTERPRET"] = "1"


@dataclass(frozen=True)
class _Context:
    gpu_tag: str
    cache_dir: Path  # this GPU tag's cache: searched algorithms, tuned kernels, weights


def _context(cache_dir: str | Path | None, tag_dir: str | Path | None = None) -> _Context:
    """The GPU tag of the current device and its cache folder; kernels launch under it."""
    from slidesparse.core.hardware import device_tag
    from slidesparse.kernels import tuning

    tag = device_tag(torch.cuda.current_device())
    root = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "slidesparse"
    ctx = _Context(tag, Path(tag_dir) if tag_dir else root / tag)
    tuning.use(ctx.gpu_tag, ctx.cache_dir)
    return ctx


def build_engine(
    model: str | Path,
    backend: str = "bf16",
    *,
    dtype: str | None = None,
    sparsity: str | None = None,
    device: str | None = None,
    max_len: int = 4096,
    seed: int = 0,
    require_pruned: bool = False,
    cache_dir: str | Path | None = None,
    tag_cache_dir: str | Path | None = None,
    weight_cache: bool | None = None,
    search: bool = True,
    use_graphs: bool = True,
    fused: bool | None = None,
    gemm: str = "auto",
) -> Engine:
    """An :class:`Engine` for ``model`` (built-in name or local HF folder) on ``backend``.

    ``sparsity``: slidesparse's 2_L pattern; for ``w8a8`` / ``bf16``, a pattern to prune the
    weights to first (so a dense run sees the same pruned weights). ``require_pruned``: refuse
    weights that are not already pruned to it instead of pruning. ``cache_dir``: root of the
    per-GPU-tag caches (searched algorithms, prepared checkpoints; default
    ``~/.cache/slidesparse``). ``tag_cache_dir``: this GPU tag's cache folder itself (a results
    store's, so the engine shares searched algorithms with the kernel cells).
    ``weight_cache``: cache prepared weights on disk (default: for checkpoints, not for
    random weights). ``search``: search GEMM algorithms missing from the
    cache (else the first vetted candidate). ``max_len``: longest sequence (RoPE table).
    ``fused``: norm, RoPE and SiLU-and-mul as the Triton kernels of
    :mod:`slidesparse.engine.fused` (default: on CUDA; on a CPU only under the interpreter).
    ``gemm``: the quantized linears' GEMMs (:func:`slidesparse.engine.algos.gemm_kinds`):
    ``auto`` (where CUTLASS runs, per layer shape and M the faster of CUTLASS with the scales
    fused and cuBLASLt / cuSPARSELt + dequant; the weights are kept in both forms),
    ``cutlass`` or ``csrc``.
    """
    cfg, folder = resolve_config(model)
    dtype = dtype or checkpoint_dtype(folder) or "int8"
    pattern, prune = _check_backend(backend, dtype, sparsity)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise UserError(f"device {device!r} is not supported; use cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device")
    quantized = backend != "bf16"
    if device == "cpu":
        _ensure_interpreter()
    max_len = min(max_len, cfg.max_position)

    ctx = None
    kinds: tuple[str, ...] = ()
    selector = None
    if device == "cuda":
        ctx = _context(cache_dir, tag_cache_dir)
    if quantized:
        from slidesparse.engine import algos

        err = cerr = None
        if device == "cuda":
            cerr = algos.cutlass_error(dtype) if gemm != "csrc" else None
            # The csrc extension is built only where its GEMMs may run.
            err = algos.extension_error() if gemm != "cutlass" else None
        kinds = algos.gemm_kinds(device, pattern is not None, err, gemm=gemm, cutlass_error=cerr)
        if ctx is not None:
            selector = algos.Router(kinds, ctx.cache_dir, ctx.gpu_tag, search_ok=search)
    plan = LinearPlan(
        backend,
        QDTYPES.get(dtype) if quantized else None,
        pattern,
        prune,
        kinds or ("torch",),
        require_pruned,
    )

    src = HFWeights(folder, cfg, device) if folder else RandomWeights(cfg, device, seed)
    use_cache = (folder is not None) if weight_cache is None else weight_cache
    store = None
    cached = None
    if quantized and use_cache:
        root = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "slidesparse"
        store = PreparedCache(root, ctx.gpu_tag if ctx else "cpu", src.fingerprint(), plan)
        cached = store.load(device)
    to_save: dict[str, torch.Tensor] = {}

    blocks = []
    for i in range(cfg.num_layers):
        w = src.layer(i)
        mods = {}
        for name in LINEARS:
            full = f"layers.{i}.{name}"
            bias = w["qkv_bias"] if name == "qkv_proj" else None
            if cached is not None and f"{full}.weight" in cached:
                t = {k[len(full) + 1 :]: v for k, v in cached.items() if k.startswith(f"{full}.")}
            else:
                t = convert_linear(w[name], plan, f"{src_name(folder, cfg)} {full}")
                if store is not None:
                    to_save.update({f"{full}.{k}": v for k, v in t.items()})
            w[name] = None  # free the bf16 copy before the next linear
            mods[name] = _make_linear(plan, cfg, name, t, bias, selector, full)
        attn = Attention(cfg, mods["qkv_proj"], mods["o_proj"])
        mlp = MLP(mods["gate_up_proj"], mods["down_proj"])
        blocks.append(
            Block(
                attn,
                mlp,
                RMSNorm(w["input_layernorm"], cfg.rms_eps),
                RMSNorm(w["post_attention_layernorm"], cfg.rms_eps),
            )
        )
    if store is not None and to_save:
        store.save(to_save)
        del to_save
    net = Transformer(
        cfg, src.embed(), blocks, RMSNorm(src.final_norm(), cfg.rms_eps), src.lm_head(), max_len
    )
    net.fused = (device == "cuda") if fused is None else bool(fused)
    if net.fused and device == "cpu":
        _ensure_interpreter()
    info = EngineInfo(
        cfg.name,
        backend,
        dtype if quantized else None,
        pattern,
        prune,
        "+".join(kinds) or None,
        device,
        ctx.gpu_tag if ctx else None,
        str(folder) if folder else "random",
    )
    return Engine(net, info, selector, use_graphs=use_graphs and device == "cuda")


def checkpoint_dtype(folder: Path | None) -> str | None:
    """The W8A8 dtype a checkpoint folder is stored in (None: unquantized or no folder)."""
    if folder is None:
        return None
    from slidesparse.engine.checkpoint import read_scheme
    from slidesparse.engine.config import read_hf_config

    scheme = read_scheme(read_hf_config(folder), str(folder))
    return scheme.dtype if scheme else None


def src_name(folder, cfg: EngineConfig) -> str:
    return str(folder) if folder else cfg.name


def _make_linear(plan: LinearPlan, cfg: EngineConfig, name: str, t: dict, bias, selector, full):
    N, K = cfg.layer_shapes[name]
    if plan.backend == "bf16":
        return lin.Bf16Linear(t["weight"], bias)
    return lin.QuantLinear(
        N=N,
        K=K,
        qdtype=plan.qdtype,
        pattern=plan.pattern,
        forms=forms_of(t, plan.kinds),
        w_scale=t["w_scale"].float().contiguous(),
        bias=None if bias is None else bias.to(torch.bfloat16).contiguous(),
        selector=selector,
        name=full,
    )


class Engine:
    """A built model plus its decode state; see the module docstring."""

    def __init__(self, model: Transformer, info: EngineInfo, selector=None, *, use_graphs=True):
        self.model = model.eval()
        self.info = info
        self.cfg = model.cfg
        self.selector = selector
        self.device = model.embed.device
        self.use_graphs = use_graphs
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.tok = self.pos = self.hist = None
        self.prompt_len = 0
        self._host_pos = 0

    # -- state ----------------------------------------------------------------------------

    def reset(self, batch: int, cache_len: int) -> None:
        """Static cache and decode buffers for ``batch`` sequences of up to ``cache_len``."""
        # Rounded up, so nearby lengths share one graph.
        cache_len = min(sizing.cache_len(cache_len), self.model.max_len)
        cur = self.model.layers[0].attn.cache
        if cur is None or cur.batch != batch or cur.max_len != cache_len:
            self._graphs.clear()  # graphs point at the old buffers
            self.model.setup_cache(batch, cache_len)
            dev = self.device
            self.tok = torch.zeros(batch, dtype=torch.long, device=dev)  # [B]
            self.pos = torch.zeros(1, dtype=torch.long, device=dev)  # [1]
            self.hist = torch.zeros(batch, cache_len + 1, dtype=torch.long, device=dev)

    @property
    def cache_len(self) -> int:
        return self.model.layers[0].attn.cache.max_len

    # -- steps ----------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, tokens: torch.Tensor, max_new: int = 1) -> torch.Tensor:
        """tokens [B, S] -> last-token logits [B, vocab]; readies decode of ``max_new`` tokens."""
        if tokens.dim() != 2 or tokens.shape[1] == 0:
            raise UserError(
                f"prompt tokens must be [batch, length >= 1], got {tuple(tokens.shape)}"
            )
        B, S = tokens.shape
        if S + max_new > self.model.max_len:
            raise UserError(
                f"prompt {S} + {max_new} new tokens exceed the engine's "
                f"max_len {self.model.max_len}"
            )
        tokens = tokens.to(self.device)
        self.reset(B, S + max_new)
        logits = self.model.prefill(tokens)  # [B, vocab]
        first = logits.argmax(-1)  # greedy, on the device
        self.hist[:, :S] = tokens
        self.hist[:, S] = first
        self.tok.copy_(first)
        self.pos.fill_(S)
        self.prompt_len = S
        self._host_pos = S  # the device's pos, tracked on the host without a sync
        return logits

    def _step(self) -> torch.Tensor:
        """One decode step on the static state (what the graph captures)."""
        logits = self.model.decode(self.tok, self.pos)  # [B, vocab]
        nxt = logits.argmax(-1)  # [B]
        self.pos.add_(1)
        self.hist.index_copy_(1, self.pos, nxt[:, None])
        self.tok.copy_(nxt)
        return logits

    def _graph(self):
        key = (self.tok.shape[0], self.cache_len)
        g = self._graphs.get(key)
        if g is not None:
            return g
        # Eager warm-up on a side stream: searches GEMM algorithms, builds cuSPARSELt plans
        # and compiles Triton kernels, none of which may happen during capture. It writes
        # this position's k/v, which the real step writes again.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.model.decode(self.tok, self.pos)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = self._step()
        self._graphs[key] = (graph, logits)
        return self._graphs[key]

    @torch.inference_mode()
    def step(self) -> torch.Tensor:
        """Decode one token per sequence; returns that step's logits [B, vocab]."""
        if self.tok is None:
            raise RuntimeError("call prefill before step")
        if self._host_pos >= self.cache_len:
            raise RuntimeError(f"KV cache is full ({self.cache_len} positions)")
        self._host_pos += 1
        if not self.use_graphs:
            return self._step()
        graph, logits = self._graph()
        graph.replay()
        return logits

    def capture(self) -> None:
        """Capture the decode graph for the current (batch, cache length) now (GPU only)."""
        if self.use_graphs:
            with torch.inference_mode():
                self._graph()

    @torch.inference_mode()
    def generate(self, tokens: torch.Tensor, max_new: int) -> torch.Tensor:
        """Greedy: prompt [B, S] -> ``max_new`` new tokens [B, max_new] (on the device)."""
        if max_new < 1:
            raise UserError(f"max_new must be >= 1, got {max_new}")
        self.prefill(tokens, max_new)
        for _ in range(max_new - 1):
            self.step()
        S = self.prompt_len
        return self.hist[:, S : S + max_new].clone()

    def weight_bytes(self) -> int:
        """Bytes of the weights one decode step reads: block linears + lm_head."""
        lm = self.model.lm_head
        return sum(m.weight_bytes() for _, m in self.model.linears()) + lm.numel() * 2
