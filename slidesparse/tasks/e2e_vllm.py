"""End-to-end cells on vLLM's own dense W8A8 path (backend ``cutlass``), where vLLM is installed.

vLLM runs in a subprocess (``vllm bench throughput``) on the public compressed-tensors W8A8
checkpoint, so its CUDA state, memory pools and compile caches never leak into the warm
worker. The engine arguments follow the seeds' runs (docs/method.md, "The matrix") and are
recorded in every row. Without vLLM a cell is ``Unsupported`` (recorded skipped).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slidesparse.core.errors import Unsupported
from slidesparse.core.process import die_with_parent
from slidesparse.engine.sizing import prefill_shape
from slidesparse.tasks import TaskContext

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


def engine_args(phase: str, M: int) -> dict[str, int]:
    """Benchmark and engine arguments for ``phase`` ("prefill" | "decode") at ``M`` tokens.

    prefill: input_len = min(M, 1024), max_num_seqs = ceil(M / 1024), output_len = 1,
    num_prompts = 128 * max_num_seqs, max_num_batched_tokens = M. decode: input_len = 16,
    output_len = 256, max_num_seqs = num_prompts = M. With chunked prefill off, vLLM needs
    max_num_batched_tokens >= max_model_len, so it is raised to that where M is smaller.
    """
    if phase == "prefill":
        max_num_seqs, input_len = prefill_shape(M)  # the engine's cells use the same split
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


def run_cell(phase: str, params: Mapping[str, Any], ctx: TaskContext) -> list[dict]:
    """One vLLM dense cell: ``vllm bench throughput`` on the public W8A8 checkpoint."""
    if importlib.util.find_spec("vllm") is None:
        raise Unsupported("vLLM is not installed (pip install slidesparse[vllm])")
    if ctx.device != "cuda":
        raise Unsupported("no CUDA device")
    model, dtype, M = params["model"], params["dtype"], int(params["M"])
    # A local folder (a compressed-tensors W8A8 checkpoint) is served as it is.
    checkpoint = model if Path(model).is_dir() else _CHECKPOINTS.get((model, dtype))
    if checkpoint is None:
        raise Unsupported(f"no public {dtype} checkpoint of {model} for end-to-end runs")
    env = dict(os.environ)
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
            "backend": "cutlass",
            "kernel": "vllm",
            "sparsity": "dense",
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
