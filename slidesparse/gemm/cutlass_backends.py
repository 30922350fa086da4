"""``cutlass`` (dense) and ``cutlass-sparse`` (2:4) on the CUTLASS library, scales fused.

Both write ``bf16(X·Wᵀ · scale_x[M] · scale_w[N] (+ bias))``: the W8A8 linear without a
separate dequant pass (:mod:`slidesparse.native.cutlass`). In a kernel cell the scales are
vectors of ones, so the product checked is the plain one while the epilogue still reads both
vectors and does the multiplies it does in the engine. The search tries every compiled
tile / cluster / schedule configuration of the family, each with several tile orders
(swizzle x raster; the cache keys the winner per GPU tag like the other backends'). The
sparse backend takes the slid weight through CUTLASS's own 2:4 compressor, one compressed
copy for every configuration.

``cutlass`` is registered as a dense baseline: the kernel reports take the faster of it and
cuBLASLt per shape and name the winner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slidesparse.gemm import register_backend
from slidesparse.gemm.base import GemmBackend, PreparedWeight
from slidesparse.gemm.operands import lift, torch_dtype
from slidesparse.native.cutlass import MAX_CC, MIN_CC

_OUT = {"int8": ("bf16",), "fp8": ("bf16",)}
_RASTER = ("auto", "M", "N")


@dataclass
class CutlassWeight:
    """A weight as the CUTLASS GEMMs read it: values (dense [N, K]) or the compressed 2:4
    buffer plus metadata, and the per-channel scale vector."""

    values: Any
    meta: Any
    scale: Any  # [N] fp32


def unit_scales(n: int, device):
    """A scale vector of ones [n] fp32: a kernel cell checks the plain product, while the
    epilogue still reads the vector and multiplies."""
    import torch

    return torch.ones(n, dtype=torch.float32, device=device)


def config_args(config: dict) -> tuple[int, int, int]:
    """(configuration index, swizzle, raster) of a searched config dict."""
    return int(config.get("config", 0)), int(config.get("swizzle", 1)), int(config.get("raster", 0))


@dataclass
class CutlassInput:
    """An activation [M, K'] and its per-token scale vector [M] fp32."""

    x: Any
    scale: Any

    @classmethod
    def unit(cls, x) -> CutlassInput:
        """A quantized activation with unit token scales."""
        return cls(x, unit_scales(x.shape[0], x.device))


class _Cutlass(GemmBackend):
    out_dtypes = _OUT

    def _fam(self, dtype: str) -> int:
        from slidesparse.native import cutlass

        return cutlass.family(dtype, self.sparse)

    def candidates(self, weight: PreparedWeight, inp) -> list[dict]:
        from slidesparse.native import cutlass

        names = cutlass.config_names(self._fam(weight.dtype))
        return [
            {"config": i, "name": n, "swizzle": sw, "raster": r}
            for i, n in enumerate(names)
            for sw, r in cutlass.SCHEDULES
        ]

    def make_call(self, weight: PreparedWeight, inp: CutlassInput, config: dict):
        from slidesparse.native import cutlass

        fam, w, (cfg, sw, r) = self._fam(weight.dtype), weight.data, config_args(config)
        x, sx, N = inp.x, inp.scale, weight.N
        return lambda: cutlass.scaled_mm(fam, cfg, x, w.values, w.meta, sx, w.scale, None, N, sw, r)

    def describe(self, weight: PreparedWeight, config: dict) -> dict:
        from slidesparse.native import cutlass

        # Hopper's FP8 schedules skip periodic promotion; Blackwell accumulates in TMEM fp32.
        arch = cutlass.target()
        accum = ",accum=fast" if weight.dtype == "fp8" and arch and arch.name == "90a" else ""
        return {
            "kernel": (
                f"cutlass_sm{arch.name if arch else '?'}[{config.get('name')},"
                f"swizzle={config.get('swizzle', 1)},"
                f"raster={_RASTER[int(config.get('raster', 0))]},"
                f"epilogue=scale_tok*scale_ch{accum}]"
            ),
            "alg_id": config.get("config"),
            "split_k": 1,
            "workspace_bytes": None,
        }

    @staticmethod
    def _input(x, dtype: str) -> CutlassInput:
        return CutlassInput.unit(x.to(torch_dtype(dtype)).contiguous())


# What both backends need: a GPU of one of the library's targets (cc 9.0, 10.0, 12.0, 12.1:
# the library's own check names the rest, and INT8 on sm120 / sm121), the library, W8A8.
_NEEDS = {"dtypes": ("int8", "fp8"), "min_cc": MIN_CC, "max_cc": MAX_CC, "needs_cutlass": True}


@register_backend("cutlass", sparse=False, baseline=True, **_NEEDS)
class CutlassDense(_Cutlass):
    """Dense W8A8 GEMM on CUTLASS with the scales in the epilogue."""

    name = "cutlass"
    sparse = False

    def prepare_weight(self, w_values, pattern, dtype, out_dtype) -> PreparedWeight:
        N, K = w_values.shape
        w = w_values.to(torch_dtype(dtype)).contiguous()
        data = CutlassWeight(w, None, unit_scales(N, w.device))
        return PreparedWeight(N, K, K, dtype, out_dtype, pattern, data)

    def prepare_input(self, x_values, weight: PreparedWeight) -> CutlassInput:
        return self._input(x_values, weight.dtype)


@register_backend("cutlass-sparse", sparse=True, **_NEEDS)
class CutlassSparse(_Cutlass):
    """2:4 W8A8 GEMM on CUTLASS (its compressor, the scales in the epilogue)."""

    name = "cutlass-sparse"
    sparse = True

    def prepare_weight(self, w_values, pattern, dtype, out_dtype) -> PreparedWeight:
        from slidesparse.core import sparsity
        from slidesparse.native import cutlass

        N, K = w_values.shape
        w_slide = sparsity.slide_weight(w_values, pattern).to(torch_dtype(dtype)).contiguous()
        values, meta = cutlass.compress(self._fam(dtype), w_slide)
        del w_slide
        return PreparedWeight(
            N, K, sparsity.k_slide(K, pattern), dtype, out_dtype, pattern,
            CutlassWeight(values, meta, unit_scales(N, values.device)),
            extra={"compressed_bytes": values.numel() + meta.numel()},
        )  # fmt: skip

    def prepare_input(self, x_values, weight: PreparedWeight) -> CutlassInput:
        return self._input(lift(x_values, weight.pattern, weight.K_slide), weight.dtype)
