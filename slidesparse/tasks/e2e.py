"""Tasks ``e2e-prefill`` and ``e2e-decode``: end-to-end throughput of a whole model per cell.

Backend ``engine`` runs slidesparse's own engine (:mod:`slidesparse.engine`) with random
weights at the model's real shapes; its linear layers follow the cell's dtype and pattern:

* ``bf16``, dense: the unquantized reference;
* ``int8`` / ``fp8``, dense: ``w8a8`` (per-token quantization, searched cuBLASLt GEMM);
* ``int8`` / ``fp8``, 2_L: ``slidesparse`` (fused quant + slide, cuSPARSELt on the slid,
  compressed weight, pruned to (L-2):L by magnitude first).

Backend ``cutlass`` is vLLM's own dense W8A8 path (:mod:`slidesparse.tasks.e2e_vllm`), run
where vLLM is installed and skipped with that reason elsewhere.

M follows the seeds' vLLM runs: prefill at M is ceil(M/1024) sequences of min(M, 1024)
tokens in one forward; decode at M is M concurrent sequences of a 16-token prompt and 256
new tokens, timed as whole requests (prompt and new tokens over the elapsed time, vLLM's
definition of tokens/s). Every row keeps the median with p25/p75, the samples taken, the
spread of the median reached against ``ctx.target_spread`` (adaptive timing), the share of
the step spent in the linear layers (the same step's linears timed alone), peak memory and
the engine's configuration.

One engine per (model, dtype, pattern) is built per worker and shared by the prefill and
decode cells that follow it (they share a setup key); building another frees it first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, PositiveInt

from slidesparse.core.errors import Unsupported
from slidesparse.core.timing import DEFAULT_TARGET
from slidesparse.engine.sizing import CELL_TIMING, DECODE_NEW
from slidesparse.tasks import TaskContext, register_task
from slidesparse.tasks.axes import Axes, Sparsity, axis, product

BACKENDS = ("engine", "cutlass")
E2E_DTYPES = ("int8", "fp8", "bf16")
_MEMO = "e2e.engine"


def _model(value: Any) -> str:
    """A built-in model name, or a local checkpoint folder (kept as its absolute path)."""
    from slidesparse.core.models import MODELS

    if isinstance(value, str) and value in MODELS:
        return value
    if isinstance(value, str) and (Path(value) / "config.json").is_file():
        return str(Path(value).resolve())
    raise ValueError(
        f"unknown model {value!r}; allowed: {', '.join(MODELS)}, or a checkpoint folder "
        "with config.json"
    )


EngineModel = Annotated[str, BeforeValidator(_model)]


def model_spec(model: str):
    """The shapes of a cell's model: the registry's, or a checkpoint folder's config.json."""
    from slidesparse.core.models import MODELS, get_model

    if model in MODELS:
        return get_model(model)
    from slidesparse.engine.config import resolve_config

    return resolve_config(model)[0].spec


def linear_backend(dtype: str, sparsity: str) -> str:
    """The engine's linear backend for a cell: ``bf16``, ``w8a8`` or ``slidesparse``."""
    if dtype == "bf16":
        return "bf16"
    return "w8a8" if sparsity == "dense" else "slidesparse"


class E2EAxes(Axes):
    """e2e-prefill / e2e-decode: throughput per model, dtype, backend, pattern and M.

    Kept combinations: ``engine`` with int8/fp8 at any pattern and bf16 dense;
    ``cutlass`` (vLLM) with int8/fp8 dense only."""

    model: axis(EngineModel)
    dtype: axis(Literal[E2E_DTYPES])  # type: ignore[valid-type]
    backend: axis(Literal[BACKENDS])  # type: ignore[valid-type]
    sparsity: axis(Sparsity)
    M: axis(PositiveInt)

    def points(self) -> Iterator[dict[str, Any]]:
        for p in product(
            model=self.model,
            dtype=self.dtype,
            backend=self.backend,
            sparsity=self.sparsity,
            M=self.M,
        ):
            dense = p["sparsity"] == "dense"
            if p["dtype"] == "bf16" and not (dense and p["backend"] == "engine"):
                continue
            if p["backend"] == "cutlass" and not dense:
                continue
            yield p


def memory_bytes(p: Mapping[str, Any], rules, phase: str) -> float:
    """Predicted peak device bytes of the cell (:func:`slidesparse.engine.sizing.engine_bytes`)."""
    from slidesparse.engine.sizing import engine_bytes

    spec = model_spec(p["model"])
    sparsity = p.get("sparsity", "dense")
    return engine_bytes(spec, p["dtype"], sparsity, phase, int(p["M"]), rules.e2e.reserve_bytes)


def cost(p: Mapping[str, Any], phase: str) -> tuple[float, float] | None:
    """``plan``'s modelled (setup, cell) seconds of an engine cell; None for vLLM cells."""
    from slidesparse.engine.sizing import engine_cost_s

    if p.get("backend") != "engine":
        return None
    spec = model_spec(p["model"])
    return engine_cost_s(spec, p["dtype"], p.get("sparsity", "dense"), phase, int(p["M"]))


def _setup_key(p: Mapping[str, Any]) -> str:
    if p.get("backend") != "engine":
        return ""
    return f"engine:{p['model']}:{p['dtype']}:{p.get('sparsity', 'dense')}"


def _operand(p: Mapping[str, Any]) -> tuple[str | None, bool]:
    return p["dtype"], p.get("sparsity") not in (None, "dense")


def _engine(params: Mapping[str, Any], ctx: TaskContext):
    """The worker's engine for the cell's (model, dtype, pattern), built once."""
    from slidesparse.engine import build_engine
    from slidesparse.engine.bench import free

    key = _setup_key(params)
    held = ctx.memo.get(_MEMO)
    if held is not None and held[0] == key:
        return held[1]
    # A new engine needs the device memory the prediction gave it: drop whatever this worker
    # holds for other setups (a previous engine, kernel cells' prepared weights and buffers).
    ctx.memo.clear()
    held = None  # our own reference to the old engine, too
    free(ctx.device)
    dtype, sparsity = params["dtype"], params.get("sparsity", "dense")
    eng = build_engine(
        params["model"],
        linear_backend(dtype, sparsity),
        dtype=None if dtype == "bf16" else dtype,
        sparsity=None if sparsity == "dense" else sparsity,
        device=ctx.device,
        tag_cache_dir=ctx.cache_dir,
        max_len=2048,
    )
    ctx.memo[_MEMO] = (key, eng)
    return eng


def engine_row(
    eng,
    phase: str,
    M: int,
    device: str,
    new_tokens: int = DECODE_NEW,
    target_spread: float = DEFAULT_TARGET,
) -> dict:
    """The result row of one engine cell: measure ``phase`` at ``M`` the seeds' way
    (``new_tokens`` per decode request: 256 in the matrix), every timing adaptive to
    ``target_spread``."""
    from slidesparse import __version__
    from slidesparse.engine.bench import measure

    r = measure(
        eng,
        phase,
        M,
        device=device,
        decode_steps=new_tokens - 1,
        whole_request=True,
        target_spread=target_spread,
        **CELL_TIMING[phase],
    )
    info = eng.info
    step_us = r["step_ms"] * 1e3
    batch = r["batch"]
    prompt = r["seq_len"]
    new = 1 if phase == "prefill" else new_tokens
    elapsed = step_us * 1e-6 * (1 if phase == "prefill" else r["decode_steps"])
    extra_keys = (
        "linear_share", "gemm_share", "linear_s", "gemm_s", "kernel_gemm_s", "quant_s",
        "dequant_s", "bound_s", "bound", "pct_of_bound", "attention_s", "weight_bytes",
        "tokens_per_s_p25", "tokens_per_s_p75", "peak_mem_gb",
    )  # fmt: skip
    return {
        "mode": phase,
        "model": info.model,
        "backend": "engine",
        "kernel": f"slidesparse-engine {__version__} ({info.backend}, {info.gemm or 'bf16'})",
        "M": M,
        "tokens_per_s": r["tokens_per_s"],
        "latency_us": step_us,  # one prefill forward / one decode step
        "latency_p25_us": r["tokens_per_s"] / r["tokens_per_s_p75"] * step_us,
        "latency_p75_us": r["tokens_per_s"] / r["tokens_per_s_p25"] * step_us,
        "n_samples": r["n_samples"],
        "latency_spread": r["latency_spread"],
        "spread_met": r["spread_met"],
        "timer": r["timer"],
        "elapsed_s": elapsed,
        "requests_per_s": batch / elapsed,
        "prompt_len": prompt,
        "output_len": new,
        "max_num_seqs": batch,
        "num_prompts": batch,
        "extra": {
            **{k: r.get(k) for k in extra_keys},
            "target_spread": target_spread,
            "engine": {
                "version": __version__,
                "linear": info.backend,
                "gemm": info.gemm,
                # auto: the GEMM each linear ran on per padded M, and why (the router's ratio)
                "routes": eng.selector.summary() if eng.selector is not None else None,
                "weights": info.weights,
                "fused": bool(eng.model.fused),
                "cuda_graphs": bool(eng.use_graphs),
                # Quant / dequant launches on untuned configs so far in this worker.
                "untuned_kernels": _untuned(),
                "batch": batch,
                "seq_len": prompt,
                "new_tokens": new,
                "tokens_per_s": "(prompt + new tokens) / elapsed",
            },
        },
    }


def _untuned() -> dict[str, str]:
    from slidesparse.kernels import tuning

    return tuning.untuned_launches()


def _run(phase: str, params: Mapping[str, Any], ctx: TaskContext) -> list[dict]:
    if params["backend"] == "cutlass":
        from slidesparse.tasks import e2e_vllm

        return e2e_vllm.run_cell(phase, params, ctx)
    if ctx.device != "cuda":
        # The engine runs on a CPU for its correctness tests; a CPU timing of a GPU
        # engine (quant kernels in Triton's interpreter) measures nothing worth a row.
        raise Unsupported("no CUDA device")
    eng = _engine(params, ctx)
    row = engine_row(eng, phase, int(params["M"]), ctx.device, target_spread=ctx.target_spread)
    # The cell's own model value (a folder's path), so its rows share the cell's identity.
    cell = {"model": params["model"], "dtype": params["dtype"]}
    return [{**row, **cell, "sparsity": params.get("sparsity", "dense")}]


_META = dict(
    axes=E2EAxes,
    default_timeout_s=1800,
    needs_gpu=True,
    setup_key=_setup_key,
    # One engine's prefill and decode cells in one shard: the engine is built once.
    shard_key=lambda p: _setup_key(p) or None,
    operand=_operand,
)


@register_task(
    "e2e-prefill",
    mode="prefill",
    memory_bytes=lambda p, rules: memory_bytes(p, rules, "prefill"),
    cost=lambda p: cost(p, "prefill"),
    **_META,
)
def run_prefill(params: Mapping[str, Any], ctx: TaskContext) -> list[dict]:
    """One end-to-end prefill throughput cell."""
    return _run("prefill", params, ctx)


@register_task(
    "e2e-decode",
    mode="decode",
    memory_bytes=lambda p, rules: memory_bytes(p, rules, "decode"),
    cost=lambda p: cost(p, "decode"),
    **_META,
)
def run_decode(params: Mapping[str, Any], ctx: TaskContext) -> list[dict]:
    """One end-to-end decode throughput cell."""
    return _run("decode", params, ctx)
