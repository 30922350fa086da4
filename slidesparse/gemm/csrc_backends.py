"""``cublaslt`` (dense baseline) and ``cusparselt`` (2:4) on the csrc extension.

cublaslt searches cuBLASLt's heuristic list (the first 16 results; FP8 also with C in place
or separate, torch._scaled_mm's choice); cusparselt searches alg_id x split_k (Segment-K where
allowed) x the four operand descriptions, one of which is torch._cslt_sparse_mm's, so both
searches are supersets of what the torch built-ins run. Where the extension cannot be built or
loaded, :func:`slidesparse.gemm.select_backend` falls back to torch-builtin / torch-cslt,
which run under their own names.

FP4 (E2M1, cc >= 10.0 only) runs block-scaled: operands are quantized by
:mod:`slidesparse.gemm.fp4` (cuBLASLt: one E4M3 scale per 16 values, cuSPARSELt: per 32), and
each cell is checked against the product of the dequantized operands, which is what the
kernel computes. cuSPARSELt's E2M1 structure is paired 4:8, so the fp4 slide path prunes and
slides pairs of K values (``fp4.prune_pairs`` / ``slide_pairs`` / ``lift_pairs``).
"""

from __future__ import annotations

from dataclasses import dataclass

from slidesparse.core.errors import Unsupported
from slidesparse.gemm import fp4, register_backend
from slidesparse.gemm.base import GemmBackend, PreparedWeight
from slidesparse.gemm.operands import lift, torch_dtype
from slidesparse.gemm.torch_builtin import _CSLT_OUT, cslt_candidates

_DENSE_OUT = {
    "int8": ("int32",),
    "fp8": ("bf16", "fp16", "fp32"),
    "fp16": ("fp16",),
    "bf16": ("bf16",),
    "fp4": ("bf16",),
}
_SPARSE_OUT = {**_CSLT_OUT, "fp4": ("bf16",)}
# Packed FP4 rows must be 16-byte aligned (32 values); cuSPARSELt's slid K is whole paired
# 4:8 groups in whole 32-value scale blocks, which fp4.pair_k_slide already is (64).
FP4_DENSE_K_MULTIPLE = 32
FP4_SPARSE_K_MULTIPLE = 64
# Heuristic results past this rank are rarely fastest; timing all 64 would triple search time.
MAX_CUBLASLT_CANDIDATES = 16
# Operand descriptions (see csrc/cusparselt_gemm.cpp): bit 0 = W row-major, bit 1 = x
# row-major used transposed; 3 is torch's. On an H200 layouts 0 and 1 each won on some shapes
# (up to ~9%), and torch's description beat both on others (up to ~15%, INT8 2_8 qkv).
LAYOUTS = (0, 1, 2, 3)
# Layouts sharing bit 0 share the compressed weight.
A_LAYOUTS = (0, 1)
MIN_FP4_CC = (10, 0)


def fp4_unsupported_reason(cc: tuple[int, int] | None, sparse: bool) -> str | None:
    """Why FP4 cannot run on compute capability ``cc`` (the matrix's skip wording), or None."""
    if cc is not None and tuple(cc) >= MIN_FP4_CC:
        return None
    from slidesparse.core.hardware import capabilities

    return capabilities(tuple(cc) if cc is not None else None).reason("fp4", sparse)


def _require_fp4(device: str, sparse: bool) -> None:
    cc = None
    if device == "cuda":
        import torch

        cc = tuple(torch.cuda.get_device_capability())
    reason = fp4_unsupported_reason(cc, sparse)
    if reason:
        raise Unsupported(reason)


@dataclass
class Fp4Sparse:
    """An FP4 weight for cuSPARSELt: compressed buffers per A layout bit, and its operand."""

    compressed: dict
    operand: fp4.Operand


class _CsrcBackend(GemmBackend):
    """What the two csrc backends share: FP4 exists only on some builds and GPUs."""

    def check_out_dtype(self, dtype: str, out_dtype: str) -> None:
        if dtype == "fp4":
            _require_fp4(self.device, sparse=self.sparse)
        super().check_out_dtype(dtype, out_dtype)


@register_backend(
    "cublaslt",
    sparse=False,
    baseline=True,
    needs_extension=True,
    dtypes=("fp16", "bf16", "int8", "fp8", "fp4"),
    fallback="torch-builtin",
)
class CublasLt(_CsrcBackend):
    """Dense GEMM on cuBLASLt with a searched heuristic algorithm."""

    name = "cublaslt"
    sparse = False

    out_dtypes = _DENSE_OUT

    def prepare_weight(self, w_values, pattern, dtype, out_dtype) -> PreparedWeight:
        N, K = w_values.shape
        if dtype == "fp4":
            _require_fp4(self.device, sparse=False)
            data = fp4.prepare(w_values, fp4.CUBLASLT_BLOCK, FP4_DENSE_K_MULTIPLE)
            return PreparedWeight(N, K, K, dtype, out_dtype, pattern, data)
        return PreparedWeight(N, K, K, dtype, out_dtype, pattern, w_values.to(torch_dtype(dtype)))

    def prepare_input(self, x_values, weight: PreparedWeight):
        if weight.dtype == "fp4":
            return fp4.prepare(x_values, fp4.CUBLASLT_BLOCK, FP4_DENSE_K_MULTIPLE)
        return x_values.to(torch_dtype(weight.dtype)).contiguous()

    def reference(self, weight: PreparedWeight, inp, rows: list[int]):
        """FP4: the fp64 product of the dequantized operands; None (the task's own) otherwise."""
        if weight.dtype != "fp4":
            return None
        return fp4.reference(inp.dequantized, weight.data.dequantized, rows)

    def candidates(self, weight: PreparedWeight, inp) -> list[dict]:
        from slidesparse.native import ops

        if weight.dtype == "fp4":
            out = torch_dtype(weight.out_dtype)
            algos = ops.cublaslt_algos(inp.packed, weight.data.packed, out)
            return [
                {"algo_index": i, **a, "separate_c": False}
                for i, a in enumerate(algos[:MAX_CUBLASLT_CANDIDATES])
            ]
        algos = ops.cublaslt_algos(inp, weight.data, torch_dtype(weight.out_dtype))
        top = [{"algo_index": i, **a} for i, a in enumerate(algos[:MAX_CUBLASLT_CANDIDATES])]
        # torch._scaled_mm hands FP8 a C pointer apart from the output; either may win.
        modes = (True, False) if weight.dtype == "fp8" else (False,)
        return [{**c, "separate_c": m} for m in modes for c in top]

    def make_call(self, weight: PreparedWeight, inp, config: dict):
        from slidesparse.native import ops

        out = torch_dtype(weight.out_dtype)
        idx = int(config.get("algo_index", 0))
        sep = bool(config.get("separate_c", False))
        if weight.dtype == "fp4":
            w, x = weight.data, inp
            return lambda: ops.cublaslt_mm(x.packed, w.packed, out, idx, False, x.scale, w.scale)
        return lambda: ops.cublaslt_mm(inp, weight.data, out, idx, sep)

    def describe(self, weight: PreparedWeight, config: dict) -> dict:
        c = ",c=separate" if config.get("separate_c") else ""
        if weight.dtype == "fp4":
            c += ",scales=vec16_ue4m3"
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
    dtypes=("fp16", "bf16", "int8", "fp8", "fp4"),
    min_cc=(8, 0),
    fallback="torch-cslt",
)
class CusparseLt(_CsrcBackend):
    """2:4 GEMM on cuSPARSELt with a searched alg_id / split_k."""

    name = "cusparselt"
    sparse = True

    def __init__(self, device: str):
        super().__init__(device)
        self._workspace: dict[tuple, int] = {}  # (alg, split_k, mode, layout) -> bytes

    out_dtypes = _SPARSE_OUT

    def prepare_weight(self, w_values, pattern, dtype, out_dtype) -> PreparedWeight:
        from slidesparse.core import sparsity
        from slidesparse.native import ops

        N, K = w_values.shape
        if dtype == "fp4":
            return self._prepare_fp4_weight(w_values, pattern, out_dtype)
        w_slide = sparsity.slide_weight(w_values, pattern).to(torch_dtype(dtype)).contiguous()
        # One compressed copy per description of the sparse operand the search tries.
        compressed = {a: ops.cusparselt_compress(w_slide, a) for a in A_LAYOUTS}
        del w_slide
        return PreparedWeight(
            N, K, sparsity.k_slide(K, pattern), dtype, out_dtype, pattern, compressed,
            extra={"compressed_bytes": compressed[A_LAYOUTS[0]].numel()},
        )  # fmt: skip

    def _prepare_fp4_weight(self, w_values, pattern, out_dtype) -> PreparedWeight:
        """Pair-pruned, pair-slid, block-quantized (32), compressed: paired 4:8 for E2M1."""
        from slidesparse.native import ops

        _require_fp4(self.device, sparse=True)
        N, K = w_values.shape
        w_slide = fp4.slide_pairs(fp4.prune_pairs(w_values, pattern), pattern)
        operand = fp4.prepare(w_slide, fp4.CUSPARSELT_BLOCK, FP4_SPARSE_K_MULTIPLE)
        del w_slide
        compressed = {a: ops.cusparselt_compress(operand.packed, a) for a in A_LAYOUTS}
        return PreparedWeight(
            N, K, operand.k_values, "fp4", out_dtype, pattern, Fp4Sparse(compressed, operand),
            extra={"compressed_bytes": compressed[A_LAYOUTS[0]].numel()},
        )  # fmt: skip

    def prepare_input(self, x_values, weight: PreparedWeight):
        if weight.dtype == "fp4":
            x_lift = fp4.pad_k(fp4.lift_pairs(x_values, weight.pattern), FP4_SPARSE_K_MULTIPLE)
            if x_lift.shape[-1] != weight.K_slide:
                raise ValueError(f"lifted fp4 activation has {x_lift.shape[-1]} columns, "
                                 f"expected {weight.K_slide}")  # fmt: skip
            return fp4.prepare(x_lift, fp4.CUSPARSELT_BLOCK, FP4_SPARSE_K_MULTIPLE)
        return lift(x_values, weight.pattern, weight.K_slide).to(torch_dtype(weight.dtype))

    def reference(self, weight: PreparedWeight, inp, rows: list[int]):
        """FP4: the fp64 product of the dequantized slid operands; None otherwise."""
        if weight.dtype != "fp4":
            return None
        return fp4.reference(inp.dequantized, weight.data.operand.dequantized, rows)

    @staticmethod
    def _operands(weight: PreparedWeight, inp, lay: int):
        """(compressed W, x, trailing scale args) of one layout, for any dtype."""
        if weight.dtype == "fp4":
            w = weight.data
            return w.compressed[lay & 1], inp.packed, (w.operand.scale, inp.scale)
        return weight.data[lay & 1], inp, ()

    def candidates(self, weight: PreparedWeight, inp) -> list[dict]:
        import torch

        from slidesparse.native import ops

        _, x, scales = self._operands(weight, inp, 0)
        cc = torch.cuda.get_device_capability(x.device)
        out = torch_dtype(weight.out_dtype)
        grid = []
        for lay in LAYOUTS:
            # Each description has its own algorithm count; one that cannot be planned at all
            # is left out (the search records nothing for it).
            try:
                info = ops.cusparselt_plan_info(x, weight.N, out, 0, 1, -1, lay, *scales)
            except RuntimeError:
                continue
            grid += cslt_candidates(info["max_alg_id"], x.shape[0], weight.N, cc, layouts=(lay,))
        return grid

    def vet_candidates(self, weight, inp, candidates, *, cache_dir, gpu_tag):
        if self.device != "cuda" or weight.dtype == "fp4":
            # The probe child has no block scales; FP4 plans are checked in-process.
            return candidates, {}
        from slidesparse.gemm import probe

        return probe.vet_prepared(weight, inp, candidates, cache_dir=cache_dir, gpu_tag=gpu_tag)

    def make_call(self, weight: PreparedWeight, inp, config: dict):
        from slidesparse.native import ops

        out = torch_dtype(weight.out_dtype)
        a, s, m = config.get("alg_id", 0), config.get("split_k", 1), config.get("split_k_mode", -1)
        lay = config.get("layout", 0)
        data, x, scales = self._operands(weight, inp, lay)
        info = ops.cusparselt_plan_info(x, weight.N, out, a, s, m, lay, *scales)
        self._workspace[(a, s, m, lay)] = info["workspace_bytes"]
        return lambda: ops.cusparselt_mm(data, x, weight.N, out, a, s, m, lay, *scales)

    def describe(self, weight: PreparedWeight, config: dict) -> dict:
        a, s, m = config.get("alg_id", 0), config.get("split_k", 1), config.get("split_k_mode", -1)
        lay = config.get("layout", 0)
        # FP4 rows name the structure and scales that ran: pairs of K values, 32-value blocks.
        f4 = ",fp4=paired4:8,scales=vec32_ue4m3" if weight.dtype == "fp4" else ""
        return {
            "kernel": f"cusparseLtMatmul[alg={a},split_k={s},mode={m},layout={lay}{f4}]",
            "alg_id": a,
            "split_k": s,
            "workspace_bytes": self._workspace.get((a, s, m, lay)),
        }
