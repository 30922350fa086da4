"""Fallback backends on PyTorch's own CUDA kernels.

* ``torch-builtin`` (dense): ``torch._int_mm`` (INT8 -> INT32), ``torch._scaled_mm`` (FP8 ->
  BF16, unit tensor-wise scales), ``torch.mm`` (FP16, BF16). These are the reference points
  the issue's targets name; ``_int_mm`` is known to be weak on Hopper (docs/method.md, "GEMM
  backends and baselines").
* ``torch-cslt`` (2:4 sparse): ``torch._cslt_compress`` + ``torch._cslt_sparse_mm`` with the
  algorithm searched over alg_id x split_k, since the default alg_id 0 can be 2x slower.

Both compute ``Y[M, N]`` with the weight as the left (sparse) operand and the activation as a
transposed view, the layout cuSPARSELt accepts for every dtype (``transpose_result`` gives
``[M, N]`` directly).
"""

from __future__ import annotations

from slidesparse.core.errors import Unsupported
from slidesparse.gemm import register_backend
from slidesparse.gemm.base import GemmBackend, PreparedWeight
from slidesparse.gemm.operands import lift, torch_dtype

# Output dtypes each operand dtype's built-in kernel can write.
_DENSE_OUT = {
    "int8": ("int32",),
    "fp8": ("bf16", "fp16", "fp32"),
    "fp16": ("fp16",),
    "bf16": ("bf16",),
}
_CSLT_OUT = {
    "int8": ("int32", "bf16", "fp16"),
    "fp8": ("bf16", "fp16", "fp32"),
    "fp16": ("fp16",),
    "bf16": ("bf16",),
}
# Split-K pays off only when the output has too few tiles to fill the GPU; past this many
# output elements (about two 128x256 tiles per SM of a 132-SM part) it is not searched.
SPLIT_K_MAX_OUTPUT = 132 * 2 * 128 * 256
TORCH_CSLT_PROBE_ALGS = 32
# Split-K 2 and 4 are kept out of the search: on an H200 with cuSPARSELt 0.8.0 (torch 2.11)
# every one of them killed its process with SIGSEGV (modes 1, 2 and the default; all four
# operand layouts; INT8 and FP16; M=256 N=512 K_slide=1024; 48 of 48 crashed, each probed in
# its own process by slidesparse.gemm.probe, also with C given its own descriptor), while
# Segment-K (split_k=-1) ran and was exact in all 8 of its probes. Segment-K on small
# outputs is kept out with them until a run shows it safe there too.
SPLIT_K_SEARCH = False
SEGMENT_K_MIN_N = 400  # cuSPARSELt accepts Segment-K (split_k=-1) on sm90+ only from N >= 400


@register_backend(
    "torch-builtin", sparse=False, baseline=True, dtypes=("fp16", "bf16", "int8", "fp8")
)
class TorchBuiltinDense(GemmBackend):
    """torch._int_mm / torch._scaled_mm / torch.mm."""

    name = "torch-builtin"
    sparse = False
    out_dtypes = _DENSE_OUT

    def prepare_weight(self, w_values, pattern, dtype, out_dtype) -> PreparedWeight:
        N, K = w_values.shape
        w = w_values.to(torch_dtype(dtype)).contiguous()
        return PreparedWeight(N, K, K, dtype, out_dtype, pattern, w)

    def prepare_input(self, x_values, weight: PreparedWeight):
        return x_values.to(torch_dtype(weight.dtype)).contiguous()

    def make_call(self, weight: PreparedWeight, inp, config: dict):
        import torch

        wt = weight.data.T  # [K, N] column-major view: the TN layout INT8/FP8 kernels need
        if weight.dtype == "int8":
            return lambda: torch._int_mm(inp, wt)
        if weight.dtype == "fp8":
            one = torch.ones((), device=inp.device, dtype=torch.float32)
            out = torch_dtype(weight.out_dtype)
            return lambda: torch._scaled_mm(inp, wt, one, one, out_dtype=out)
        return lambda: torch.mm(inp, wt)

    def describe(self, weight: PreparedWeight, config: dict) -> dict:
        kernel = {"int8": "torch._int_mm", "fp8": "torch._scaled_mm"}.get(weight.dtype, "torch.mm")
        return {"kernel": kernel}


def cslt_candidates(
    max_alg_id: int,
    M: int,
    N: int,
    cc: tuple[int, int],
    *,
    modes: bool = True,
    split_k: bool | None = None,
    layouts: tuple[int, ...] = (),
) -> list[dict]:
    """The alg_id x split_k (x layout) grid searched for one cuSPARSELt GEMM (output [M, N]).

    ``modes``: also search the split-K mode (1: one kernel, 2: two kernels, partial sums
    then a reduction); without it split-K runs in the library's default mode (-1).
    ``split_k``: search split-K 2/4 and Segment-K on small outputs (default
    :data:`SPLIT_K_SEARCH`). ``layouts``: csrc layouts of the sparse operand to try.
    """
    split_k = SPLIT_K_SEARCH if split_k is None else split_k
    small = M * N <= SPLIT_K_MAX_OUTPUT
    splits: list[tuple[int, int]] = [(1, -1)]
    if small and split_k:
        splits += [(2, 1), (2, 2), (4, 1), (4, 2)] if modes else [(2, -1), (4, -1)]
    if tuple(cc) >= (9, 0) and N >= SEGMENT_K_MIN_N and (split_k or not small):
        splits.append((-1, -1))
    grid = [
        {"alg_id": a, "split_k": s, "split_k_mode": m}
        for a in range(max(1, max_alg_id))
        for s, m in splits
    ]
    if layouts:
        grid = [{**c, "layout": lay} for lay in layouts for c in grid]
    return grid


@register_backend("torch-cslt", sparse=True, dtypes=("fp16", "bf16", "int8", "fp8"), min_cc=(8, 0))
class TorchCslt(GemmBackend):
    """torch._cslt_sparse_mm with a searched alg_id / split_k."""

    name = "torch-cslt"
    sparse = True
    out_dtypes = _CSLT_OUT

    def prepare_weight(self, w_values, pattern, dtype, out_dtype) -> PreparedWeight:
        import torch

        from slidesparse.core import sparsity

        if not torch.backends.cusparselt.is_available():
            raise Unsupported("this torch build has no cuSPARSELt")
        N, K = w_values.shape
        w_slide = sparsity.slide_weight(w_values, pattern).to(torch_dtype(dtype)).contiguous()
        compressed = torch._cslt_compress(w_slide)
        del w_slide
        return PreparedWeight(
            N, K, sparsity.k_slide(K, pattern), dtype, out_dtype, pattern, compressed,
            extra={"compressed_bytes": compressed.numel() * compressed.element_size()},
        )  # fmt: skip

    def prepare_input(self, x_values, weight: PreparedWeight):
        return lift(x_values, weight.pattern, weight.K_slide).to(torch_dtype(weight.dtype))

    def candidates(self, weight: PreparedWeight, inp) -> list[dict]:
        import torch

        # torch reports the alg count of one reference problem (1 on torch 2.11 / H200), not
        # of this one: probe a wider range; ids past the real count fail and are rejected.
        max_alg = max(torch.backends.cusparselt.get_max_alg_id() or 1, TORCH_CSLT_PROBE_ALGS)
        cc = torch.cuda.get_device_capability(inp.device)
        # torch hands split_k_mode to the library enum unmapped, whose values changed
        # between cuSPARSELt versions: leave the mode to the library.
        return cslt_candidates(max_alg, inp.shape[0], weight.N, cc, modes=False)

    def vet_candidates(self, weight, inp, candidates, *, cache_dir, gpu_tag):
        # torch hands cuSPARSELt the operand description csrc calls layout 3, so the csrc probe
        # runs exactly these plans; without the extension the probe cannot start and every
        # candidate is trusted, as before.
        if self.device != "cuda":
            return candidates, {}
        from slidesparse.gemm import probe

        return probe.vet_prepared(weight, inp, candidates, cache_dir=cache_dir,
                                  gpu_tag=gpu_tag, default_layout=3)  # fmt: skip

    def make_call(self, weight: PreparedWeight, inp, config: dict):
        import torch

        out = None if weight.dtype in ("fp16", "bf16") else torch_dtype(weight.out_dtype)
        xt = inp.T  # [K_slide, M] transposed view: cuSPARSELt refuses a contiguous K x M
        a = config.get("alg_id", 0)
        s = config.get("split_k", 1)
        m = config.get("split_k_mode", -1)

        def call():
            return torch._cslt_sparse_mm(weight.data, xt, None, None, out, True, a, s, m)

        return call

    def describe(self, weight: PreparedWeight, config: dict) -> dict:
        return {
            "kernel": "torch._cslt_sparse_mm",
            "alg_id": config.get("alg_id", 0),
            "split_k": config.get("split_k", 1),
        }
