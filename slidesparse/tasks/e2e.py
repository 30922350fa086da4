"""Tasks ``e2e-prefill`` and ``e2e-decode``: vLLM's offline throughput benchmark per cell.

The engine arguments follow docs/method.md, "The matrix" exactly and are recorded in every row.
vLLM runs in a subprocess (``vllm bench throughput``) so that its own CUDA state, memory
pools and compile caches never leak into the warm worker. Without vLLM installed, a cell is
``Unsupported`` (recorded skipped, not failed).

Backends: ``cutlass`` is vLLM's own W8A8 path with the dense checkpoint; ``cublaslt`` and
``cusparselt`` route the linear layers through slidesparse via its vLLM integration
(``slidesparse.vllm_plugin``), selected with environment variables the plugin reads.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import PositiveInt

from slidesparse.core.errors import Unsupported
from slidesparse.core.process import die_with_parent
from slidesparse.tasks import TaskContext, register_task
from slidesparse.tasks.axes import Axes, ModelName, Sparsity, W8A8Dtype, axis, product

# Public W8A8 checkpoints (compressed-tensors) per model and dtype (docs/method.md, "Models").
_CHECKPOINTS = {
    ("Llama3.2-1B", "int8"): "RedHatAI/Llama-3.2-1B-Instruct-quantized.w8a8",
    ("Llama3.2-1B", "fp8"): "RedHatAI/Llama-3.2-1B-Instruct-FP8-dynamic",
    ("Llama3.2-3B", "int8"): "RedHatAI/Llama-3.2-3B-Instruct-quantized.w8a8",
    ("Llama3.2-3B", "fp8"): "RedHatAI/Llama-3.2-3B-Instruct-FP8-dynamic",
    ("Qwen2.5-7B", "int8"): "RedHatAI/Qwen2.5-7B-Instruct-quantized.w8a8",
    ("Qwen2.5-7B", "fp8"): "RedHatAI/Qwen2.5-7B-Instruct-FP8-dynamic",
    ("Qwen2.5-14B", "int8"): "RedHatAI/Qwen2.5-14B-Instruct-quantized.w8a8",
    ("Qwen2.5-14B", "fp8"): "RedHatAI/Qwen2.5-14B-Instruct-FP8-dynamic",
}
_PREFILL_CHUNK = 1024  # tokens per prompt in prefill cells


def engine_args(phase: str, M: int) -> dict[str, int]:
    """Benchmark and engine arguments for ``phase`` ("prefill" | "decode") at ``M`` tokens.

    prefill: input_len = min(M, 1024), max_num_seqs = ceil(M / 1024), output_len = 1,
    num_prompts = 128 * max_num_seqs, max_num_batched_tokens = M. decode: input_len = 16,
    output_len = 256, max_num_seqs = num_prompts = M. With chunked prefill off, vLLM needs
    max_num_batched_tokens >= max_model_len, so it is raised to that where M is smaller.
    """
    if phase == "prefill":
        input_len = min(M, _PREFILL_CHUNK)
        max_num_seqs = math.ceil(M / _PREFILL_CHUNK)
        args = dict(
            input_len=input_len,
            output_len=1,
            max_num_seqs=max_num_seqs,
            num_prompts=128 * max_num_seqs,
            max_num_batched_tokens=M,
        )
    elif phase == "decode":
        args = dict(
            input_len=16,
            output_len=256,
            max_num_seqs=M,
            num_prompts=M,
            max_num_batched_tokens=max(M * 16, 2048),
        )
    else:
        raise ValueError(f"phase must be prefill or decode, got {phase!r}")
    args["max_model_len"] = args["input_len"] + args["output_len"]
    args["max_num_batched_tokens"] = max(args["max_num_batched_tokens"], args["max_model_len"])
    return args


def bench_command(checkpoint: str, args: Mapping[str, int], output_json: Path) -> list[str]:
    """The ``vllm bench throughput`` command line for one cell."""
    return [
        sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "throughput",
        "--model", checkpoint,
        "--dataset-name", "random",
        "--input-len", str(args["input_len"]),
        "--output-len", str(args["output_len"]),
        "--num-prompts", str(args["num_prompts"]),
        "--max-num-seqs", str(args["max_num_seqs"]),
        "--max-num-batched-tokens", str(args["max_num_batched_tokens"]),
        "--max-model-len", str(args["max_model_len"]),
        "--no-enable-chunked-prefill",
        "--no-enable-prefix-caching",
        "--output-json", str(output_json),
    ]  # fmt: skip


def _run(phase: str, params: Mapping[str, Any], ctx: TaskContext) -> list[dict]:
    if importlib.util.find_spec("vllm") is None:
        raise Unsupported("vLLM is not installed (pip install slidesparse[vllm])")
    if ctx.device != "cuda":
        raise Unsupported("no CUDA device")
    model, dtype, backend = params["model"], params["dtype"], params["backend"]
    sparsity, M = params.get("sparsity", "dense"), int(params["M"])
    checkpoint = _CHECKPOINTS.get((model, dtype))
    if checkpoint is None:
        raise Unsupported(f"no public {dtype} checkpoint of {model} for end-to-end runs")
    env = dict(os.environ)
    if backend != "cutlass":
        if importlib.util.find_spec("slidesparse.vllm_plugin") is None:
            raise Unsupported(
                f"backend {backend} needs the slidesparse vLLM integration "
                "(slidesparse.vllm_plugin), which this installation lacks"
            )
        env.update(SLIDESPARSE_LINEAR_BACKEND=backend, SLIDESPARSE_SPARSITY=sparsity)
    args = engine_args(phase, M)
    with tempfile.TemporaryDirectory(prefix="slidesparse-e2e-") as tmp:
        out = Path(tmp) / "throughput.json"
        cmd = bench_command(checkpoint, args, out)
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, preexec_fn=die_with_parent
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            text = (proc.stderr or proc.stdout or "").strip()[-3000:]
            raise RuntimeError(f"vllm bench throughput exited {proc.returncode}: {text}")
        data = json.loads(out.read_text())
    return [
        {
            "mode": phase,
            "model": model,
            "dtype": dtype,
            "backend": backend,
            "kernel": "vllm" if backend == "cutlass" else f"vllm+slidesparse:{backend}",
            "sparsity": sparsity,
            "M": M,
            "prompt_len": args["input_len"],
            "output_len": args["output_len"],
            "max_num_seqs": args["max_num_seqs"],
            "num_prompts": args["num_prompts"],
            "tokens_per_s": data.get("tokens_per_second"),
            "requests_per_s": data.get("requests_per_second"),
            "elapsed_s": data.get("elapsed_time"),
            "timer": "vllm bench throughput",
            "extra": {
                "engine_args": args,
                "checkpoint": checkpoint,
                "command": cmd,
                "wall_s": wall,
                "vllm_output": data,
            },
        }
    ]


# Backends of an end-to-end cell: dense (vLLM's CUTLASS path, cuBLASLt) or 2:4 (cuSPARSELt).
_SPARSE_BACKEND = {"cutlass": False, "cublaslt": False, "cusparselt": True}


class E2EAxes(Axes):
    """e2e-prefill / e2e-decode: vLLM throughput per model, dtype, backend, pattern and M."""

    model: axis(ModelName)
    dtype: axis(W8A8Dtype)
    backend: axis(Literal[tuple(_SPARSE_BACKEND)])  # type: ignore[valid-type]
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
            if _SPARSE_BACKEND[p["backend"]] == (p["sparsity"] != "dense"):
                yield p


def memory_bytes(p: Mapping[str, Any], rules) -> float:
    """Predicted peak bytes of serving ``p["model"]``: weights, embeddings, activations, reserve."""
    from slidesparse.core.models import get_model
    from slidesparse.core.sparsity import expansion, parse_pattern

    spec = get_model(p["model"])
    pattern = parse_pattern(p["sparsity"])
    # A sparse backend serves the slid checkpoint, whose linear weights grow by the
    # expansion 2(L-2)/L; embeddings and lm_head stay dense.
    scale = 1.0 if pattern.is_dense else expansion(pattern)
    weights = spec.linear_params * rules.bytes_per_element[p["dtype"]] * scale
    copies = 1 if spec.tie_word_embeddings else 2
    embed = copies * spec.vocab_size * spec.hidden * rules.e2e.embedding_bytes
    acts = p["M"] * spec.hidden * rules.e2e.activation_bytes_per_token_hidden
    return weights + embed + acts + rules.e2e.reserve_bytes


def _operand(p: Mapping[str, Any]) -> tuple[str | None, bool]:
    return p["dtype"], p.get("sparsity") not in (None, "dense")


_META = dict(
    axes=E2EAxes,
    default_timeout_s=3600,
    needs_gpu=True,
    operand=_operand,
    memory_bytes=memory_bytes,
)


@register_task("e2e-prefill", mode="prefill", **_META)
def run_prefill(params: Mapping[str, Any], ctx: TaskContext) -> list[dict]:
    """One end-to-end prefill throughput cell."""
    return _run("prefill", params, ctx)


@register_task("e2e-decode", mode="decode", **_META)
def run_decode(params: Mapping[str, Any], ctx: TaskContext) -> list[dict]:
    """One end-to-end decode throughput cell."""
    return _run("decode", params, ctx)
