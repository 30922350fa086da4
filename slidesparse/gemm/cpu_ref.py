"""``cpu-ref``: the torch CPU reference backend.

Dense: ``Y = X · Wᵀ``. Sparse: ``Y = lift(X) · slide(W)ᵀ``, the SlideSparse decomposition
itself, with the slid weight checked to be 2:4 and the product checked to equal the dense one
exactly (integer-valued dtypes) when the weight is prepared. Math is fp64 for INT8 (exact
integer sums) and fp32 otherwise, on the quantized values, so every dtype runs on any CPU.
It is what the runner's smoke preset times; its latencies say nothing about GPUs.
"""

from __future__ import annotations

from slidesparse.core.dtypes import DTYPES
from slidesparse.gemm import register_backend
from slidesparse.gemm.base import GemmBackend, PreparedWeight
from slidesparse.gemm.operands import lift


def _math_dtype(dtype: str):
    import torch

    return torch.float64 if dtype == "int8" else torch.float32


def _cast_out(y, out_dtype: str):
    import torch

    if out_dtype == "int32":
        return y.round().to(torch.int32)
    from slidesparse.gemm.operands import torch_dtype

    return y.to(torch_dtype(out_dtype))


class _CpuRef(GemmBackend):
    # The reference casts its fp64/fp32 product to whatever raw output is asked for.
    out_dtypes = {d: ("fp16", "bf16", "int32", "fp32") for d in DTYPES}  # noqa: RUF012

    def describe(self, weight: PreparedWeight, config: dict) -> dict:
        math = "fp64" if weight.dtype == "int8" else "fp32"
        kind = "slide" if self.sparse else "dense"
        return {"kernel": f"torch.cpu.mm[{math},{kind}]"}

    def make_call(self, weight: PreparedWeight, inp, config: dict):
        w = weight.data

        def call():
            return _cast_out(inp @ w.T, weight.out_dtype)

        return call


class CpuRefDense(_CpuRef):
    """Dense reference on the CPU."""

    name = "cpu-ref"
    sparse = False

    def prepare_weight(self, w_values, pattern, dtype, out_dtype) -> PreparedWeight:
        N, K = w_values.shape
        data = w_values.to("cpu", _math_dtype(dtype)).contiguous()
        return PreparedWeight(N, K, K, dtype, out_dtype, pattern, data)

    def prepare_input(self, x_values, weight: PreparedWeight):
        return x_values.to("cpu", _math_dtype(weight.dtype)).contiguous()


class CpuRefSparse(_CpuRef):
    """Slide-path reference on the CPU: registered under the same name, chosen by pattern."""

    name = "cpu-ref"
    sparse = True

    def prepare_weight(self, w_values, pattern, dtype, out_dtype) -> PreparedWeight:
        from slidesparse.core import sparsity

        N, K = w_values.shape
        w = w_values.to("cpu")
        w_slide = sparsity.slide_weight(w, pattern)
        if not sparsity.check_2to4(w_slide):
            raise RuntimeError(f"slid weight for {pattern.name} is not 2:4")
        K_slide = w_slide.shape[1]
        # The decomposition must be lossless: spot-check it on a probe activation now, so a
        # wrong slide fails loudly at setup instead of as a tolerance miss later.
        import torch

        probe = torch.arange(K, dtype=torch.float64).remainder(7).sub(3).unsqueeze(0)
        exact = probe @ w.double().T
        slid = lift(probe, pattern, K_slide) @ w_slide.double().T
        if not torch.equal(exact, slid):
            raise RuntimeError(f"slide decomposition of {pattern.name} changed the product")
        data = w_slide.to(_math_dtype(dtype)).contiguous()
        return PreparedWeight(N, K, K_slide, dtype, out_dtype, pattern, data)

    def prepare_input(self, x_values, weight: PreparedWeight):
        x = x_values.to("cpu", _math_dtype(weight.dtype))
        return lift(x, weight.pattern, weight.K_slide).contiguous()


@register_backend("cpu-ref", sparse=None, baseline=True, needs_cuda=False)
class CpuRef:
    """Registry entry of cpu-ref: one name for both paths, the pattern picks the class."""

    @staticmethod
    def for_pattern(device: str, pattern) -> GemmBackend:
        return CpuRefDense(device) if pattern.is_dense else CpuRefSparse(device)
