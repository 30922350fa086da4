"""The numeric contract shared by the quant kernels, their torch reference and the tests.

Per-token symmetric quantization (docs/method.md, "Quantization"), with every rounding spelled
out so that the Triton kernels (GPU or interpreter) and the torch reference agree bit for bit:

* ``amax[m] = max_k |x[m, k]|``; a NaN or inf anywhere in the row makes ``amax`` +inf.
* ``scale[m] = max(amax, AMAX_FLOOR) / QMAX`` and ``inv[m] = QMAX / max(amax, AMAX_FLOOR)``,
  both IEEE fp32 divisions (round to nearest even).
* ``y = x * inv`` in fp32; rows with an inf or NaN (exactly those with inv == 0) become +0
  (no NaN products, no -0); ``y`` is clamped to ``[-QMAX, QMAX]``.
* INT8: ``y`` rounds half to even to an integer. FP8 E4M3: ``y`` rounds to nearest even on
  the E4M3 grid (3 mantissa bits, subnormal step 2^-9), exactly what
  ``torch.Tensor.to(torch.float8_e4m3fn)`` does for values within +-448.
* Padded rows (M up to a multiple of 16) are zeros with scale 1; padded columns are zeros.

So a row with any inf or NaN is stored as zeros with ``scale = +inf``, and ``dequant_bias``
turns it into a NaN output row (0 * inf): the non-finite input stays visible downstream
instead of being silently saturated.

Dequantization: ``out = ((acc * scale_a[m]) * scale_b[n]) + bias[n]`` in fp32, each step
rounded separately (no fused multiply-add), then rounded to nearest even into bf16/fp16.
"""

from __future__ import annotations

from slidesparse.core.dtypes import dtype_name, torch_dtype
from slidesparse.core.errors import UserError

__all__ = ["dtype_name", "torch_dtype"]  # re-exported: the kernels' one import for dtypes

# Quantized value range per output dtype.
QMAX = {"int8": 127.0, "fp8": 448.0}

# Floor on a row's absolute maximum: keeps QMAX / amax finite for all-zero rows (the row
# quantizes to zeros with a tiny positive scale instead of 0/0).
AMAX_FLOOR = 1e-12

# Padding of the quantized activation: rows to a multiple of 16, columns to 32.
M_ALIGN = 16
K_ALIGN = 32

IN_DTYPES = ("bf16", "fp16", "fp32")
QUANT_DTYPES = ("int8", "fp8")
ACC_DTYPES = ("int32", "bf16", "fp32")
OUT_DTYPES = ("bf16", "fp16")


def ceil_to(n: int, align: int) -> int:
    """``n`` rounded up to a multiple of ``align``."""
    return -(-n // align) * align


def check_dtype(name: str, allowed: tuple[str, ...], what: str) -> str:
    """``name`` if it is one of ``allowed``, else a UserError naming ``what``."""
    if name not in allowed:
        raise UserError(f"{what} dtype {name!r} is not supported; use one of {', '.join(allowed)}")
    return name


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    import os

    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_device(fn: str, *tensors) -> None:
    """Kernels run on CUDA tensors, or on CPU tensors under the Triton interpreter."""
    for t in tensors:
        if t is None or t.is_cuda:
            continue
        if t.device.type == "cpu" and interpreting():
            continue
        raise UserError(
            f"{fn}: tensor on {t.device} is not supported; pass CUDA tensors "
            "(or set TRITON_INTERPRET=1 to run the kernels on CPU)"
        )
