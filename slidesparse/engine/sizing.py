"""What an engine cell costs before it runs: its peak device memory and its wall time.

Torch-free on purpose: ``plan`` and the skip rules run these on machines without a GPU.

**Memory** (:func:`engine_bytes`) is what the runner compares with the GPU's memory before
it starts a cell, so a cell that cannot fit is skipped with the figure instead of dying of
an out-of-memory error mid-run. It counts what :mod:`slidesparse.engine.generate` really
allocates (the activation term was checked against peaks measured on an H200):

* block linears: 1 byte per weight (INT8/FP8) or 2 (bf16); a slid 2_L weight grows K by
  2(L-2)/L, and cuSPARSELt keeps half of it plus 2 bits of position per kept value
  (``COMPRESSED_FRACTION`` of the slid bytes);
* embeddings and lm_head in bf16 (one copy when tied);
* the static KV cache, bf16: layers x 2 x batch x cache length x kv_heads x head_dim;
* prefill activations per token: the raw gate_up GEMM output (INT32 for INT8, bf16
  otherwise), the SiLU-and-mul output and its quantized (possibly slid) copy, and a few
  hidden-sized bf16 buffers (residual, norm output, attention output, q/k/v);
* decode logits [batch, vocab] in fp32 and the captured graph's private pool;
* during setup, one decoder layer's bf16 linears plus their pruned and slid copies
  (conversion runs a layer at a time, before anything else is allocated);
* a fixed reserve (CUDA context, library workspaces) from the rules file.

**Time** (:func:`engine_cost_s`) is ``plan``'s estimate for a GPU with no history: GEMM work
at a modest effective rate (``_OPS_PER_S``: below a datacenter GPU's, so a smaller card is
not badly underestimated), decode steps at a modest weight-streaming rate, times the number
of steps a cell runs (warm-up, repeats, the time split), plus the algorithm searches a new M
needs. On the H200 it gave 219 s for 46 Qwen2.5-7B cells that took 128 s. Earlier runs'
medians replace it (``plan`` says which).
"""

from __future__ import annotations

import math

from slidesparse.core.models import ModelSpec
from slidesparse.core.sparsity import expansion, parse_pattern

PREFILL_CHUNK = 1024  # tokens per sequence of a prefill cell (the seeds' vLLM runs)
DECODE_PROMPT = 16  # prompt tokens of a decode cell
DECODE_NEW = 256  # new tokens per sequence of a decode cell
# Timing of a cell: a prefill sample is one forward; a decode sample is a whole request of
# 256 tokens, so fewer repeats give the same confidence. ``repeats`` is the fewest samples:
# timing is adaptive (engine/bench.py), more are taken until the target spread or a cap.
CELL_TIMING = {"prefill": {"repeats": 5, "warmup": 2}, "decode": {"repeats": 3, "warmup": 1}}
CACHE_ALIGN = 64  # the engine rounds cache lengths up to this
COMPRESSED_FRACTION = 0.5 * (1 + 2 / 8)  # 2:4 keeps half the values + 2 bits each (8-bit)
# bf16 hidden-sized buffers per token at the prefill peak (fitted to measured H200 peaks)
_HIDDEN_BUFFERS = 24
_WEIGHT_BYTES = {"int8": 1, "fp8": 1, "bf16": 2}
_ACC_BYTES = {"int8": 4, "fp8": 2, "bf16": 2}  # raw GEMM output per element


def prefill_shape(M: int) -> tuple[int, int]:
    """(sequences, tokens each) of a prefill cell at M tokens: ceil(M/1024) x min(M, 1024)."""
    return math.ceil(M / PREFILL_CHUNK), min(M, PREFILL_CHUNK)


def cache_len(tokens: int) -> int:
    """The KV cache length the engine allocates for ``tokens`` positions."""
    return -(-tokens // CACHE_ALIGN) * CACHE_ALIGN


def linear_bytes(spec: ModelSpec, dtype: str, sparsity: str) -> float:
    """Bytes of the block linears' weights as the engine holds them."""
    base = spec.linear_params * _WEIGHT_BYTES[dtype]
    p = parse_pattern(sparsity)
    return base if p.is_dense else base * expansion(p) * COMPRESSED_FRACTION


def engine_bytes(
    spec: ModelSpec, dtype: str, sparsity: str, phase: str, M: int, reserve: float
) -> float:
    """Predicted peak device bytes of an ``e2e-{phase}`` cell at ``M`` (see the module doc)."""
    if phase not in ("prefill", "decode"):
        raise ValueError(f"phase must be prefill or decode, got {phase!r}")
    weights = linear_bytes(spec, dtype, sparsity)
    weights += spec.vocab_size * spec.hidden * 2 * (1 if spec.tie_word_embeddings else 2)
    if phase == "prefill":
        batch, seq = prefill_shape(M)
        length = cache_len(seq + 1)
    else:
        batch, length = M, cache_len(DECODE_PROMPT + DECODE_NEW)
    kv = spec.num_layers * 2 * batch * length * spec.kv_heads * spec.head_dim * 2
    grow = expansion(parse_pattern(sparsity))
    qkv_n = spec.layers["qkv"][0]
    per_token = (
        2 * spec.intermediate * _ACC_BYTES[dtype]  # gate_up raw output
        + spec.intermediate * (2 + grow)  # SiLU-and-mul output + its quantized copy
        + spec.hidden * 2 * _HIDDEN_BUFFERS
        + qkv_n * _ACC_BYTES[dtype]
    )
    tokens = batch * (seq if phase == "prefill" else DECODE_PROMPT)
    run = tokens * per_token + batch * spec.vocab_size * 4 * (2 if phase == "decode" else 1)
    # Conversion: a layer's bf16 linears, their pruned copy and the slid, quantized one.
    layer_bf16 = spec.linear_params / spec.num_layers * 2
    setup = layer_bf16 * (2 + grow / 2)
    return weights + kv + max(run, setup) + reserve


_OPS_PER_S = {"int8": 600e12, "fp8": 600e12, "bf16": 300e12}
_STREAM_BYTES_PER_S = 3e12
_STEP_FLOOR_S = 0.5e-3  # launch and small-kernel floor of one decode step
# Forwards a prefill cell runs: warm-up, the timed repeats, as many again for the in-step
# split, and about three more for the linears alone and attention. Adaptive timing may take
# more samples of a short step; earlier runs' medians replace this model anyway.
_PREFILL_STEPS = CELL_TIMING["prefill"]["warmup"] + 2 * CELL_TIMING["prefill"]["repeats"] + 3
_DECODE_REQUESTS = CELL_TIMING["decode"]["warmup"] + CELL_TIMING["decode"]["repeats"]
_SEARCH_S = 3.0  # the four layers' GEMM algorithm search at a new M (quantized engines)
_CELL_OVERHEAD_S = 3.0  # graph capture, Triton launches, row bookkeeping


def engine_cost_s(spec: ModelSpec, dtype: str, sparsity: str, phase: str, M: int):
    """(setup seconds, shared by the cells of one engine; seconds of this cell)."""
    ops = 2 * spec.linear_params  # per token; a sparse GEMM is counted as its dense twin
    search = 0.0 if dtype == "bf16" else _SEARCH_S
    if phase == "prefill":
        step = ops * M / _OPS_PER_S[dtype]
        cell = _PREFILL_STEPS * step
    else:
        weights = linear_bytes(spec, dtype, sparsity) + spec.vocab_size * spec.hidden * 2
        step = max(weights / _STREAM_BYTES_PER_S, ops * M / _OPS_PER_S[dtype]) + _STEP_FLOOR_S
        cell = _DECODE_REQUESTS * (DECODE_NEW + 1) * step
    # Building: random weights, then prune, slide and compress each linear.
    setup = 5.0 + spec.linear_params / 1e9 * (4.0 if sparsity != "dense" else 2.0)
    return setup, cell + search + _CELL_OVERHEAD_S
