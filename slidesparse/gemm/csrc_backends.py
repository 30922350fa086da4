"""``cublaslt`` (dense baseline) and ``cusparselt`` (2:4) on the csrc extension.

cublaslt searches cuBLASLt's heuristic list (the first 16 results; FP8 also with C in place
or separate, torch._scaled_mm's choice); cusparselt searches alg_id x split_k (Segment-K where
allowed) x the four operand descriptions, one of which is torch._cslt_sparse_mm's, so both
searches are supersets of what the torch built-ins run. Where the extension cannot be built or
loaded, :func:`slidesparse.gemm.select_backend` falls back to torch-builtin / torch-cslt,
which run under their own names.
"""

from __future__ import annotations

from slidesparse.gemm import register_backend
from slidesparse.gemm.base import GemmBackend, PreparedWeight
from slidesparse.gemm.operands import lift, torch_dtype
from slidesparse.gemm.torch_builtin import _CSLT_OUT, check_out, cslt_candidates

_DENSE_OUT = {
    "int8": ("int32",),
    "fp8": ("bf16", "fp16", "fp32"),
    "fp16": ("fp16",),
    "bf16": ("bf16",),
}
# Heuristic results past this rank are rarely fastest; timing all 64 would triple search time.
MAX_CUBLASLT_CANDIDATES = 16
# Operand descriptions (see csrc/cusparselt_gemm.cpp): bit 0 = W row-major, bit 1 = x
# row-major used transposed; 3 is torch's. On an H200 layouts 0 and 1 each won on some shapes
# (up to ~9%), and torch's description beat both on others (up to ~15%, INT8 2_8 qkv).
LAYOUTS = (0, 1, 2, 3)
# Layouts sharing bit 0 share the compressed weight.
A_LAYOUTS = (0, 1)


@register_backend(
    "cublaslt",
    sparse=False,
    baseline=True,
    needs_extension=True,
    dtypes=("fp16", "bf16", "int8", "fp8"),
    fallback="torch-builtin",
)
class CublasLt(GemmBackend):
    """Dense GEMM on cuBLASLt with a searched heuristic algorithm."""

    name = "cublaslt"
    sparse = False

    def check_out_dtype(self, dtype: str, out_dtype: str) -> None:
        check_out(_DENSE_OUT, self.name, dtype, out_dtype)

    def prepare_weight(self, w_values, pattern, dtype, out_dtype) -> PreparedWeight:
        N, K = w_values.shape
        return PreparedWeight(N, K, K, dtype, out_dtype, pattern, w_values.to(torch_dtype(dtype)))

    def prepare_input(self, x_values, weight: PreparedWeight):
        return x_values.to(torch_dtype(weight.dtype)).contiguous()

    def candidates(self, weight: PreparedWeight, inp) -> list[dict]:
        from slidesparse import ops

        algos = ops.cublaslt_algos(inp, weight.data, torch_dtype(weight.out_dtype))
        top = [{"algo_index": i, **a} for i, a in enumerate(algos[:MAX_CUBLASLT_CANDIDATES])]
        # torch._scaled_mm hands FP8 a C pointer apart from the output; either may win.
        modes = (True, False) if weight.dtype == "fp8" else (False,)
        return [{**c, "separate_c": m} for m in modes for c in top]

    def make_call(self, weight: PreparedWeight, inp, config: dict):
        from slidesparse import ops

        out = torch_dtype(weight.out_dtype)
        idx = int(config.get("algo_index", 0))
        sep = bool(config.get("separate_c", False))
        return lambda: ops.cublaslt_mm(inp, weight.data, out, idx, sep)

    def describe(self, weight: PreparedWeight, config: dict) -> dict:
        c = ",c=separate" if config.get("separate_c") else ""
        return {
            "kernel": (
                f"cublasLtMatmul[algo={config.get('algo_id')},tile={config.get('tile_id')}"
                f",stages={config.get('stages_id')}{c}]"
            ),
            "alg_id": config.get("algo_id"),
            "split_k": config.get("split_k"),
            "workspace_bytes": config.get("workspace"),
        }


@register_backend(
    "cusparselt",
    sparse=True,
    needs_extension=True,
    dtypes=("fp16", "bf16", "int8", "fp8"),
    min_cc=(8, 0),
    fallback="torch-cslt",
)
class CusparseLt(GemmBackend):
    """2:4 GEMM on cuSPARSELt with a searched alg_id / split_k."""

    name = "cusparselt"
    sparse = True

    def __init__(self, device: str):
        super().__init__(device)
        self._workspace: dict[tuple, int] = {}  # (alg, split_k, mode, layout) -> bytes

    def check_out_dtype(self, dtype: str, out_dtype: str) -> None:
        check_out(_CSLT_OUT, self.name, dtype, out_dtype)

    def prepare_weight(self, w_values, pattern, dtype, out_dtype) -> PreparedWeight:
        from slidesparse import ops, sparsity

        N, K = w_values.shape
        w_slide = sparsity.slide_weight(w_values, pattern).to(torch_dtype(dtype)).contiguous()
        # One compressed copy per description of the sparse operand the search tries.
        compressed = {a: ops.cusparselt_compress(w_slide, a) for a in A_LAYOUTS}
        del w_slide
        return PreparedWeight(
            N, K, sparsity.k_slide(K, pattern), dtype, out_dtype, pattern, compressed,
            extra={"compressed_bytes": compressed[A_LAYOUTS[0]].numel()},
        )  # fmt: skip

    def prepare_input(self, x_values, weight: PreparedWeight):
        return lift(x_values, weight.pattern, weight.K_slide).to(torch_dtype(weight.dtype))

    def candidates(self, weight: PreparedWeight, inp) -> list[dict]:
        import torch

        from slidesparse import ops

        cc = torch.cuda.get_device_capability(inp.device)
        out = torch_dtype(weight.out_dtype)
        grid = []
        for lay in LAYOUTS:
            # Each description has its own algorithm count; one that cannot be planned at all
            # is left out (the search records nothing for it).
            try:
                info = ops.cusparselt_plan_info(inp, weight.N, out, 0, 1, -1, lay)
            except RuntimeError:
                continue
            grid += cslt_candidates(info["max_alg_id"], inp.shape[0], weight.N, cc, layouts=(lay,))
        return grid

    def make_call(self, weight: PreparedWeight, inp, config: dict):
        from slidesparse import ops

        out = torch_dtype(weight.out_dtype)
        a, s, m = config.get("alg_id", 0), config.get("split_k", 1), config.get("split_k_mode", -1)
        lay = config.get("layout", 0)
        info = ops.cusparselt_plan_info(inp, weight.N, out, a, s, m, lay)
        self._workspace[(a, s, m, lay)] = info["workspace_bytes"]
        data = weight.data[lay & 1]
        return lambda: ops.cusparselt_mm(data, inp, weight.N, out, a, s, m, lay)

    def describe(self, weight: PreparedWeight, config: dict) -> dict:
        a, s, m = config.get("alg_id", 0), config.get("split_k", 1), config.get("split_k_mode", -1)
        lay = config.get("layout", 0)
        return {
            "kernel": f"cusparseLtMatmul[alg={a},split_k={s},mode={m},layout={lay}]",
            "alg_id": a,
            "split_k": s,
            "workspace_bytes": self._workspace.get((a, s, m, lay)),
        }
