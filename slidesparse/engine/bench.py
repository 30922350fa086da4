"""``bench e2e``: tokens/s of the engine per (dtype, sparsity, phase, M), with the time split
that explains it.

Shapes follow the paper's vLLM runs (SLIDESPARSE.md §7): prefill at M tokens is
ceil(M/1024) sequences of min(M, 1024) tokens in one forward; decode at M is M concurrent
sequences after a 16-token prompt, timed over ``decode_steps`` graph replays. ``dense`` is the
w8a8 engine on the unpruned weights (cuBLASLt); ``2_L`` the slidesparse engine (cuSPARSELt).

Every timing samples adaptively (:func:`slidesparse.core.timing.time_adaptive`): at least
``repeats`` samples after warm-up, then more until the spread of the median meets
``target_spread`` or :data:`MAX_S` seconds are spent; rows carry ``n_samples``,
``latency_spread`` and ``spread_met`` of the step timing. Each row carries, besides tokens/s
(the median, with p25/p75):

* ``speedup_vs_dense``: against the dense w8a8 row of the same run (dtype, phase, M);
* ``kernel_speedup``: the kernel-level model total at the same M: the four layer GEMMs
  alone (``engine_mm`` with the engine's own searched configs, random inputs), summed,
  dense over sparse (``kernel_gemm_s``);
* ``gemm_speedup_in_step`` (sparse rows): the same ratio for the GEMMs inside the real
  prefill step (CUDA events around each linear; decode: the graphed GEMMs);
  a value above L/(L-2) · 1.03 is flagged suspect and not reported (``*_raw`` keeps it);
* ``e2e_over_kernel`` (sparse rows): speedup_vs_dense / kernel_speedup;
* ``linear_share`` / ``gemm_share``: time of the step's linear layers alone (quant + GEMM +
  dequant, resp. GEMM only) over the step time; prefill on a GPU: measured inside the step
  (``quant_s`` / ``gemm_s`` / ``dequant_s``); decode: replayed as one CUDA graph of every
  layer's linears (resp. GEMMs), as the graphed step runs them;
* ``bound_s`` and ``pct_of_bound``: prefill: the GEMM + attention time alone; decode: weight
  bytes read per step over the measured copy bandwidth;
* ``peak_mem_gb``; and with ``hf=True`` the HF transformers bf16 prefill of the same batch.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass

import torch

from slidesparse.core import timing
from slidesparse.core.errors import UserError
from slidesparse.engine.generate import build_engine
from slidesparse.engine.sizing import DECODE_PROMPT, prefill_shape

PHASES = ("prefill", "decode")
DEFAULT_M = {"prefill": (16384,), "decode": (1, 64, 256)}
# Time cap of one adaptive measurement: a step or a whole request can take seconds, so this
# bounds a cell where its ``repeats`` alone do not reach the target.
MAX_S = 5.0


@dataclass(frozen=True)
class E2EPlan:
    """What one ``bench e2e`` runs."""

    model: str
    dtypes: tuple[str, ...] = ("int8", "fp8")
    sparsities: tuple[str, ...] = ("dense", "2_4", "2_6", "2_8", "2_10")
    phases: tuple[str, ...] = PHASES
    Ms: dict | None = None  # phase -> M values; None: DEFAULT_M
    repeats: int = 10  # the fewest samples of a measurement
    warmup: int = 3
    target_spread: float = timing.DEFAULT_TARGET
    decode_steps: int = 64
    bf16: bool = True  # also the bf16 engine (reference)
    hf: bool = False  # also HF transformers bf16 prefill
    search: bool = True
    cache_dir: str | None = None
    device: str | None = None
    # The quantized linears' GEMMs, each a full set of rows (algos.GEMM_CHOICES): "cutlass"
    # (scales fused) against "csrc" (cuBLASLt / cuSPARSELt + dequant) measures the epilogue.
    gemms: tuple[str, ...] = ("auto",)

    def m_values(self, phase: str) -> tuple[int, ...]:
        return tuple((self.Ms or {}).get(phase) or DEFAULT_M[phase])


def time_call(fn: Callable[[], object], device: str, policy: timing.Adaptive, warmup: int) -> dict:
    """Seconds of ``fn`` (median, p25, p75), sampled until ``policy`` is met, with the count,
    the timer, the spread of the median and whether it met the target."""
    t = timing.time_adaptive(fn, device, policy, warmup=warmup)
    s = timing.summarize(t)
    return {
        "median_s": s["latency_us"] * 1e-6,
        "p25_s": s["latency_p25_us"] * 1e-6,
        "p75_s": s["latency_p75_us"] * 1e-6,
        "n": s["n_samples"],
        "timer": s["timer"],
        "spread": s["latency_spread"],
        "met": s["spread_met"],
    }


def copy_bandwidth(device: str, target: float = timing.DEFAULT_TARGET) -> float | None:
    """Bytes/s of a device-to-device copy (read + write counted) of 1 GiB."""
    if device != "cuda":
        return None
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    with torch.inference_mode():
        t = time_call(lambda: dst.copy_(src), device, timing.Adaptive(target, 10, MAX_S), 3)
    return 2 * n / t["median_s"]


def layer_parts(engine, M: int, device: str, policy: timing.Adaptive, graph: bool = False) -> dict:
    """Seconds of the block linears alone at M rows, and of their GEMMs alone (on the fused
    kernels gate_up's linear time includes its SiLU-and-mul, as the step runs it).

    Timed the way the step runs them: eagerly for prefill (layer 0's four linears, times the
    layer count), and for a graphed decode step (``graph``) as one CUDA graph of every
    layer's four linears (resp. GEMMs), replayed - eager launches of µs-long kernels would
    time the host, not the GPU. Both the dense and the sparse engine are timed the same way
    at the same M_pad with their own searched configs, so ``kernel_speedup`` compares GEMMs.
    """
    from slidesparse.engine.linear import QuantLinear

    def mods_of(layer):
        a, m = layer.attn, layer.mlp
        return [a.qkv_proj, a.o_proj, m.gate_up_proj, m.down_proj]

    layers = engine.model.layers if graph else engine.model.layers[:1]
    g = torch.Generator(device=device).manual_seed(0)
    inputs = {}  # K -> [M, K] bf16, shared by the layers
    for m in mods_of(layers[0]):
        inputs.setdefault(
            m.K, torch.randn(M, m.K, device=device, dtype=torch.bfloat16, generator=g)
        )
    lin_calls, gemm_calls = [], []
    fused = engine.model.fused
    with torch.inference_mode():
        for layer in layers:
            for m in mods_of(layer):
                x = inputs[m.K]
                # The step's gate_up on the fused kernels: SiLU-and-mul follows (in the
                # dequant pass where there is one), and the router decides with it.
                gated = fused and m is layer.mlp.gate_up_proj
                if isinstance(m, QuantLinear):
                    lin_calls.append(lambda m=m, x=x, g=gated: m(x, gated=g))
                    q, s = m.quantize(x)
                    m.gemm(q, s, gated)  # picks (or searches) the route for this M_pad
                    gemm_calls.append(lambda m=m, q=q, s=s, g=gated: m.gemm(q, s, g))
                else:
                    lin_calls.append(_gated_call(m, x) if gated else (lambda m=m, x=x: m(x)))
                    gemm_calls.append(lambda m=m, x=x: m(x))
        if graph:
            lin_s = time_graph(lin_calls, policy)
            gemm_s = time_graph(gemm_calls, policy)
            return {"linear_s": lin_s, "gemm_s": gemm_s}
        lin_s = sum(time_call(f, device, policy, 2)["median_s"] for f in lin_calls)
        gemm_s = sum(time_call(f, device, policy, 2)["median_s"] for f in gemm_calls)
    n = engine.cfg.num_layers
    return {"linear_s": lin_s * n, "gemm_s": gemm_s * n}


def _gated_call(m, x):
    from slidesparse.engine import fused as fk

    return lambda: fk.silu_mul(m(x))


def time_graph(calls: list[Callable[[], object]], policy: timing.Adaptive) -> float:
    """Median seconds of one replay of a CUDA graph of ``calls`` (warmed up eagerly first),
    each sample one replay with the L2 flushed before it."""

    def run_all():
        for f in calls:
            f()

    return time_call(timing.graphed(run_all), "cuda", policy, 2)["median_s"]


def in_step_split(fn: Callable[[], object], repeats: int) -> dict:
    """Seconds of quant, GEMM and dequant (and their sum) inside one real eager step ``fn``,
    from CUDA events around every linear (:func:`slidesparse.engine.linear.probe`); medians
    over ``repeats`` steps (gate_up's "dequant" includes the SiLU-and-mul fused into its
    epilogue on the quantized backends). Isolated GEMMs on random inputs run at other
    clocks than the step's GEMMs on its own activations (an H200's INT8/FP8 GEMMs at large
    M are power bound, and power depends on the data), so shares and the bound use these."""
    from slidesparse.engine import linear as lin

    runs = []
    for _ in range(repeats):
        with lin.probe() as ev:
            fn()
        torch.cuda.synchronize()
        q = sum(a.elapsed_time(b) for a, b, _, _ in ev) * 1e-3
        g = sum(b.elapsed_time(c) for _, b, c, _ in ev) * 1e-3
        d = sum(c.elapsed_time(e) for _, _, c, e in ev) * 1e-3
        runs.append((q, g, d))
    q, g, d = (sorted(col)[len(col) // 2] for col in zip(*runs, strict=True))
    return {"quant_s": q, "gemm_s": g, "dequant_s": d, "linear_s": q + g + d}


def attention_s(engine, B: int, S: int, device: str, policy: timing.Adaptive) -> float:
    """Prefill attention alone (SDPA, causal) x layer count."""
    c = engine.cfg
    q = torch.randn(B, c.heads, S, c.head_dim, device=device, dtype=torch.bfloat16)
    k, v = torch.randn_like(q), torch.randn_like(q)
    f = torch.nn.functional.scaled_dot_product_attention
    t = time_call(lambda: f(q, k, v, is_causal=True), device, policy, 2)
    return t["median_s"] * c.num_layers


def measure(
    engine,
    phase: str,
    M: int,
    *,
    repeats: int,
    warmup: int,
    device: str,
    bw: float | None = None,
    decode_steps: int = 64,
    whole_request: bool = False,
    target_spread: float = timing.DEFAULT_TARGET,
    max_s: float = MAX_S,
) -> dict:
    """Tokens/s of one ``phase`` at ``M`` on ``engine`` with the time split behind it.

    prefill: one forward of :func:`prefill_shape` (M) sequences. decode: M sequences after a
    ``DECODE_PROMPT``-token prompt, ``decode_steps`` graph replays timed; with
    ``whole_request`` the timed unit is the whole request instead - the prompt's prefill
    plus ``decode_steps`` new tokens - and tokens/s counts prompt and new tokens over it,
    as vLLM's throughput benchmark does. ``step_ms`` is per decode step either way. Every
    timing takes at least ``repeats`` samples, then samples until the spread of its median
    is at most ``target_spread`` or ``max_s`` seconds are spent.
    """
    policy = timing.Adaptive(target_spread, repeats, max_s)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    g = torch.Generator(device="cpu").manual_seed(M)
    vocab = engine.cfg.vocab_size
    with torch.inference_mode():
        if phase == "prefill":
            B, S = prefill_shape(M)
            toks = torch.randint(0, vocab, (B, S), generator=g).to(device)
            engine.reset(B, S + 1)
            t = time_call(lambda: engine.model.prefill(toks), device, policy, warmup)
            tokens = B * S
            parts = layer_parts(engine, B * S, device, policy)
            parts["kernel_gemm_s"] = parts["gemm_s"]
            if device == "cuda":  # the split of the real step, on its own activations
                parts.update(in_step_split(lambda: engine.model.prefill(toks), repeats))
            attn = attention_s(engine, B, S, device, policy)
            bound = parts["gemm_s"] + attn
            extra = {"batch": B, "seq_len": S, "attention_s": attn, "bound": "gemm+attention"}
        else:
            B, steps = M, decode_steps
            toks = torch.randint(0, vocab, (B, DECODE_PROMPT), generator=g).to(device)
            engine.prefill(toks, max_new=steps + 1)
            engine.capture()

            def run():
                if whole_request:
                    engine.prefill(toks, max_new=steps + 1)
                else:
                    engine.pos.fill_(DECODE_PROMPT)
                    engine._host_pos = DECODE_PROMPT
                for _ in range(steps):
                    engine.step()

            t = time_call(run, device, policy, warmup)
            t = {**t, **{k: t[k] / steps for k in ("median_s", "p25_s", "p75_s")}}
            # Whole request: prompt + the prefill's first token + one per step.
            tokens = B * ((DECODE_PROMPT + 1 + steps) / steps if whole_request else 1)
            parts = layer_parts(engine, B, device, policy, graph=engine.use_graphs)
            parts["kernel_gemm_s"] = parts["gemm_s"]
            wbytes = engine.weight_bytes()
            bound = wbytes / bw if bw else None
            extra = {
                "batch": B,
                "seq_len": DECODE_PROMPT,
                "decode_steps": steps,
                "weight_bytes": wbytes,
                "copy_gbps": bw / 1e9 if bw else None,
                "bound": "weight_bytes/copy_bandwidth",
            }
    step = t["median_s"]
    return {
        "phase": phase,
        "M": M,
        "tokens_per_s": tokens / step,
        "tokens_per_s_p25": tokens / t["p75_s"],
        "tokens_per_s_p75": tokens / t["p25_s"],
        "step_ms": step * 1e3,
        "n_samples": t["n"],
        "latency_spread": t["spread"],
        "spread_met": t["met"],
        "timer": t["timer"],
        "linear_share": parts["linear_s"] / step,
        "gemm_share": parts["gemm_s"] / step,
        "gemm_s": parts["gemm_s"],
        "linear_s": parts["linear_s"],
        "kernel_gemm_s": parts["kernel_gemm_s"],
        "quant_s": parts.get("quant_s"),
        "dequant_s": parts.get("dequant_s"),
        "bound_s": bound,
        "pct_of_bound": bound / step if bound else None,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        **extra,
    }


def free(device: str) -> None:
    """Collect garbage and hand cached CUDA blocks back, so the next engine gets them."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def hf_prefill(model: str, cases: list[tuple[int, int]], plan: E2EPlan, device: str) -> dict:
    """HF transformers bf16 prefill tokens/s per (B, S), random weights at the same config."""
    try:
        import transformers
    except ImportError:
        return {}
    from slidesparse.engine.config import resolve_config

    cfg, folder = resolve_config(model)
    if folder is not None:
        hf_cfg = transformers.AutoConfig.from_pretrained(str(folder))
    else:
        hf_cfg = _hf_config(transformers, cfg)
    hf_cfg._attn_implementation = "sdpa"
    with torch.device(device):
        try:
            net = transformers.AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.bfloat16)
        except TypeError:  # transformers < 4.56 spells it torch_dtype
            net = transformers.AutoModelForCausalLM.from_config(hf_cfg, torch_dtype=torch.bfloat16)
    net.eval()
    out = {}
    with torch.inference_mode():
        for B, S in cases:
            toks = torch.randint(0, cfg.vocab_size, (B, S), device=device)
            t = time_call(
                lambda toks=toks: net(toks, use_cache=False, logits_to_keep=1),
                device,
                timing.Adaptive(plan.target_spread, plan.repeats, MAX_S),
                plan.warmup,
            )
            out[(B, S)] = B * S / t["median_s"]
    net = None  # free the HF model before the engines load
    free(device)
    return out


def _hf_config(transformers, cfg):
    common = dict(
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        vocab_size=cfg.vocab_size,
        rms_norm_eps=cfg.rms_eps,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_word_embeddings,
        max_position_embeddings=cfg.max_position,
    )
    if cfg.family == "llama":
        rs = cfg.rope_scaling
        scaling = (
            None
            if rs is None
            else {
                "rope_type": "llama3",
                "factor": rs.factor,
                "low_freq_factor": rs.low_freq_factor,
                "high_freq_factor": rs.high_freq_factor,
                "original_max_position_embeddings": rs.original_max_position,
            }
        )
        return transformers.LlamaConfig(**common, rope_scaling=scaling)
    return transformers.Qwen2Config(**common)


def run_e2e(plan: E2EPlan, on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Every case of ``plan``; rows in run order (dense before the sparse rows it anchors)."""
    device = plan.device or ("cuda" if torch.cuda.is_available() else "cpu")
    for p in plan.phases:
        if p not in PHASES:
            raise UserError(f"unknown phase {p!r}; valid: {', '.join(PHASES)}")
    bw = copy_bandwidth(device, plan.target_spread)
    rows: list[dict] = []
    hf = {}
    if plan.hf and "prefill" in plan.phases:
        try:
            hf = hf_prefill(
                plan.model, [prefill_shape(M) for M in plan.m_values("prefill")], plan, device
            )
        except Exception as e:  # the comparison must not sink the engine rows
            print(f"warning: HF transformers prefill failed: {type(e).__name__}: {e}")
            free(device)
    variants = [("bf16", None, None, "auto")] if plan.bf16 else []
    for gemm in plan.gemms:
        for dtype in plan.dtypes:
            sps = sorted(plan.sparsities, key=lambda s: s != "dense")  # dense first
            variants += [("w8a8" if s == "dense" else "slidesparse", dtype, s, gemm) for s in sps]
    dense_rows: dict[tuple, dict] = {}
    for backend, dtype, sp, gemm in variants:
        eng = build_engine(
            plan.model,
            backend,
            dtype=dtype or "int8",
            sparsity=None if sp in (None, "dense") else sp,
            device=device,
            cache_dir=plan.cache_dir,
            search=plan.search,
            gemm=gemm,
        )
        for phase in plan.phases:
            for M in plan.m_values(phase):
                r = measure(
                    eng,
                    phase,
                    M,
                    repeats=plan.repeats,
                    warmup=plan.warmup,
                    device=device,
                    bw=bw,
                    decode_steps=plan.decode_steps,
                    target_spread=plan.target_spread,
                )
                row = {
                    "model": eng.info.model,
                    "backend": backend,
                    "dtype": dtype or "bf16",
                    "sparsity": sp or "dense",
                    "gemm": eng.info.gemm,
                    "device": device,
                    "gpu_tag": eng.info.gpu_tag,
                    **r,
                }
                key = (dtype, phase, M, gemm)  # dense and sparse on the same GEMM choice
                if backend == "w8a8":
                    dense_rows[key] = row
                base = dense_rows.get(key)
                _speedups(row, base, sp)
                if phase == "prefill" and prefill_shape(M) in hf:
                    row["hf_tokens_per_s"] = hf[prefill_shape(M)]
                    row["speedup_vs_hf"] = row["tokens_per_s"] / row["hf_tokens_per_s"]
                if eng.selector is not None:
                    row["searched"] = sum(1 for e in eng.selector.log if not e.get("cached"))
                    row["routes"] = eng.selector.summary()
                rows.append(row)
                if on_row:
                    on_row(row)
        del eng
        free(device)
    return rows


def _speedups(row: dict, base: dict | None, sp: str | None) -> None:
    """speedup_vs_dense, kernel_speedup and, for sparse prefill, e2e over kernel speedup.

    A speedup above the L/(L-2) bound by more than the kit's margin
    (:func:`slidesparse.core.metrics.is_suspect`) means a weak or mistimed baseline: it is
    kept as ``*_raw`` with ``*_suspect`` set, and the reported value is None."""
    from slidesparse.core.metrics import is_suspect

    row["speedup_vs_dense"] = row["tokens_per_s"] / base["tokens_per_s"] if base else None
    row["kernel_speedup"] = base["kernel_gemm_s"] / row["kernel_gemm_s"] if base else None
    if base is None or sp in (None, "dense"):
        return
    row["gemm_speedup_in_step"] = base["gemm_s"] / row["gemm_s"]
    for k in ("speedup_vs_dense", "kernel_speedup"):
        if row[k] is not None and is_suspect(row[k], sp):
            row[f"{k}_raw"], row[f"{k}_suspect"], row[k] = row[k], True, None
    if row["speedup_vs_dense"] is not None and row["kernel_speedup"]:
        row["e2e_over_kernel"] = row["speedup_vs_dense"] / row["kernel_speedup"]


def format_row(r: dict) -> str:
    """One printed line per case."""

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    return (
        f"{r['model']:<12} {r['dtype']:<5} {r['sparsity']:<6} {r.get('gemm') or '-':<14} "
        f"{r['phase']:<7} "
        f"M={r['M']:<6} {r['tokens_per_s']:>12,.0f} tok/s  "
        f"vs dense {_sp(r, 'speedup_vs_dense')}  "
        f"kernel {_sp(r, 'kernel_speedup')}  "
        + (f"e2e/kernel {r['e2e_over_kernel']:.0%}  " if r.get("e2e_over_kernel") else "")
        + (
            f"gemm in step {r['gemm_speedup_in_step']:.3f}x  "
            if r.get("gemm_speedup_in_step")
            else ""
        )
        + f"step {r['step_ms']:.3f} ms "
        f"[{r['tokens_per_s_p25']:,.0f}-{r['tokens_per_s_p75']:,.0f}]  "
        f"linear {r['linear_share']:.0%} (gemm {r['gemm_share']:.0%})  "
        f"bound {f(r.get('pct_of_bound'), '.0%')}  "
        f"mem {f(r.get('peak_mem_gb'), '.1f')} GB"
        + (
            f"  vs HF {r['speedup_vs_hf']:.2f}x ({r['hf_tokens_per_s']:,.0f} tok/s)"
            if r.get("speedup_vs_hf")
            else ""
        )
    )


def _sp(r: dict, key: str) -> str:
    if r.get(f"{key}_suspect"):
        return f"suspect({r[f'{key}_raw']:.2f}x)"
    v = r.get(key)
    return "-" if v is None else f"{v:.3f}x"
