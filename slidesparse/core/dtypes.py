"""The dtype vocabulary: one spelling per dtype, its byte width and its torch storage type.

Operand dtypes (what a GEMM multiplies) are ``fp16 bf16 int8 fp8 fp4``; the other names are
activations, accumulators and outputs (``int32 fp32``). Every table that needs a dtype's size
or torch type reads it here, so a new dtype is added in one place.
"""

from __future__ import annotations

from slidesparse.core.errors import UserError

# GEMM operand dtypes, in the order tables print them.
DTYPES = ("fp16", "bf16", "int8", "fp8", "fp4")
# Quantized W8A8 dtypes (the end-to-end models).
W8A8_DTYPES = ("int8", "fp8")

# Bytes per element. FP4 packs two values per byte.
BYTES = {
    "fp16": 2,
    "bf16": 2,
    "int8": 1,
    "fp8": 1,
    "fp4": 0.5,
    "int32": 4,
    "fp32": 4,
}

# What the raw GEMM writes per operand dtype: INT8 accumulates and writes INT32 (exact);
# FP8 writes BF16 (its only fast cuBLASLt output besides FP32); FP4 writes BF16.
DEFAULT_OUT_DTYPE = {"fp16": "fp16", "bf16": "bf16", "int8": "int32", "fp8": "bf16", "fp4": "bf16"}

_TORCH_NAMES = {
    "bf16": "bfloat16",
    "fp16": "float16",
    "fp32": "float32",
    "int8": "int8",
    "fp8": "float8_e4m3fn",
    "int32": "int32",
    "fp4": "float4_e2m1fn_x2",
}

_ALIASES = {
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "fp8e4m3": "fp8",
    "fp8_e4m3": "fp8",
    "e4m3": "fp8",
    "fp4e2m1": "fp4",
    "nvfp4": "fp4",
}


def parse_dtype(text: str) -> str:
    """Canonical operand dtype name (fp16, bf16, int8, fp8, fp4); UserError naming the valid ones.

    Accepts common spellings in any case ("BF16", "float16", "FP8E4M3", "nvfp4").
    """
    s = str(text).strip().lower()
    s = _ALIASES.get(s, s)
    if s not in DTYPES:
        raise UserError(f"unknown dtype {text!r}; valid dtypes: {', '.join(DTYPES)}")
    return s


def torch_dtype(name: str):
    """The torch dtype a dtype spelled the kit's way ("bf16", "fp8", ...) is stored as."""
    import torch

    if name not in _TORCH_NAMES:
        raise UserError(f"unknown dtype {name!r}; use one of {', '.join(_TORCH_NAMES)}")
    return getattr(torch, _TORCH_NAMES[name])


def dtype_name(dtype) -> str:
    """The kit's spelling of a torch dtype (or a spelling, checked)."""
    if isinstance(dtype, str):
        if dtype not in _TORCH_NAMES:
            raise UserError(f"unknown dtype {dtype!r}; use one of {', '.join(_TORCH_NAMES)}")
        return dtype
    for name, attr in _TORCH_NAMES.items():
        if str(dtype) == f"torch.{attr}":
            return name
    raise UserError(f"unsupported dtype {dtype}; use one of {', '.join(_TORCH_NAMES)}")
