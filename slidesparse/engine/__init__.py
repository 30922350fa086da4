"""The end-to-end engine: Llama / Qwen2 decoders whose linear layers run bf16, dense W8A8 or
SlideSparse 2_L, with prefill in one forward and CUDA-graph decode (no vLLM).

Public face::

    from slidesparse.engine import build_engine
    eng = build_engine("Qwen2.5-7B", "slidesparse", dtype="int8", sparsity="2_8")
    new_tokens = eng.generate(prompt_ids, max_new=32)  # [B, S] -> [B, 32]

Modules: ``config`` (model configs), ``linear`` (backends and the ``engine_mm`` op),
``algos`` (searched GEMM algorithms), ``model`` (the decoder), ``weights`` (loading,
conversion, on-disk cache), ``generate`` (build + prefill/decode), ``bench`` (throughput).
Imports only downward: core modules, kernels, gemm, ops.
"""

from __future__ import annotations

__all__ = ["Engine", "EngineConfig", "build_engine", "resolve_config"]


def __getattr__(name: str):
    if name in ("Engine", "build_engine"):
        from slidesparse.engine import generate

        return getattr(generate, name)
    if name in ("EngineConfig", "resolve_config"):
        from slidesparse.engine import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
