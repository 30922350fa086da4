"""Every csrc op in one place: its schema, a typed wrapper with a docstring, a fake impl.

The schemas are defined here (namespace ``slidesparse``) and the CUDA implementations come
from the extension library, which :func:`ensure_loaded` builds or loads. Fake impls let
``torch.compile`` and ``torch.library.opcheck`` trace the tensor ops without running them.
Importing this module imports torch but never initializes CUDA.
"""

from __future__ import annotations

import threading

import torch

NAMESPACE = "slidesparse"

# name -> schema. Ops returning int lists are host-side queries (no fake impl, no opcheck).
SCHEMAS = {
    "cublaslt_algos": "cublaslt_algos(Tensor x, Tensor w, ScalarType out_dtype) -> int[]",
    "cublaslt_mm": (
        "cublaslt_mm(Tensor x, Tensor w, ScalarType out_dtype, int algo_index, "
        "bool separate_c, Tensor? x_scale=None, Tensor? w_scale=None, float alpha=1.0) -> Tensor"
    ),
    "cusparselt_compress": "cusparselt_compress(Tensor w, int layout) -> Tensor",
    "cusparselt_mm": (
        "cusparselt_mm(Tensor compressed, Tensor x, int N, ScalarType in_dtype, "
        "ScalarType out_dtype, int alg_id, int split_k, int split_k_mode, int layout, "
        "Tensor? w_scale=None, Tensor? x_scale=None) -> Tensor"
    ),
    "cusparselt_plan_info": (
        "cusparselt_plan_info(Tensor x, int N, ScalarType in_dtype, ScalarType out_dtype, "
        "int alg_id, int split_k, int split_k_mode, int layout, Tensor? w_scale=None, "
        "Tensor? x_scale=None) -> int[]"
    ),
    "cusparselt_version": "cusparselt_version() -> int",
}
TENSOR_OPS = ("cublaslt_mm", "cusparselt_compress", "cusparselt_mm")
CUBLASLT_ALGO_FIELDS = ("algo_id", "tile_id", "stages_id", "split_k", "reduction", "workspace")

_lib: torch.library.Library | None = None
_lock = threading.Lock()


def _define() -> None:
    global _lib
    if _lib is not None:
        return
    lib = torch.library.Library(NAMESPACE, "FRAGMENT")
    for schema in SCHEMAS.values():
        lib.define(schema)
    _lib = lib
    _register_fakes()


def _register_fakes() -> None:
    @torch.library.register_fake(f"{NAMESPACE}::cublaslt_mm")
    def _(x, w, out_dtype, algo_index, separate_c, x_scale=None, w_scale=None, alpha=1.0):
        return x.new_empty((x.shape[0], w.shape[0]), dtype=out_dtype)

    @torch.library.register_fake(f"{NAMESPACE}::cusparselt_compress")
    def _(w, layout):
        # The compressed size (values + metadata) is the library's business: data-dependent.
        n = torch.library.get_ctx().new_dynamic_size()
        return w.new_empty((n,), dtype=torch.uint8)

    @torch.library.register_fake(f"{NAMESPACE}::cusparselt_mm")
    def _(compressed, x, N, in_dtype, out_dtype, alg_id, split_k, split_k_mode, layout,
          w_scale=None, x_scale=None):  # fmt: skip
        return x.new_empty((x.shape[0], N), dtype=out_dtype)


def ensure_loaded() -> None:
    """Define the op schemas and load the extension library (building it on first use).

    Raises RuntimeError with the build/load failure; callers fall back to torch built-ins.
    """
    from slidesparse.native import extension

    with _lock:
        _define()
        extension.load()


def load_error() -> str | None:
    """None when the extension loads (building it if needed), else the reason it cannot."""
    from slidesparse.core.errors import UserError

    try:
        ensure_loaded()
    except (RuntimeError, UserError) as exc:
        return str(exc)
    return None


def _op(name: str):
    ensure_loaded()
    return getattr(getattr(torch.ops, NAMESPACE), name).default


def cublaslt_algos(x: torch.Tensor, w: torch.Tensor, out_dtype: torch.dtype) -> list[dict]:
    """cuBLASLt's heuristic algorithms for ``x[M, K] · w[N, K]ᵀ -> out_dtype``, best first.

    Each is a dict of :data:`CUBLASLT_ALGO_FIELDS`; its position is the ``algo_index`` that
    :func:`cublaslt_mm` takes.
    """
    flat = _op("cublaslt_algos")(x, w, out_dtype)
    k = len(CUBLASLT_ALGO_FIELDS)
    rows = [flat[i : i + k] for i in range(0, len(flat), k)]
    return [dict(zip(CUBLASLT_ALGO_FIELDS, r, strict=True)) for r in rows]


def cublaslt_mm(
    x: torch.Tensor,
    w: torch.Tensor,
    out_dtype: torch.dtype,
    algo_index: int = 0,
    separate_c: bool | None = None,
    x_scale: torch.Tensor | None = None,
    w_scale: torch.Tensor | None = None,
    alpha: float = 1.0,
) -> torch.Tensor:
    """Dense ``Y[M, N] = x[M, K] · w[N, K]ᵀ`` on cuBLASLt with heuristic ``algo_index``.

    x, w: contiguous, same dtype: fp16/bf16 (out the same), int8 (out int32, exact),
    float8_e4m3fn (out bf16/fp16/fp32, unit scales) or float4_e2m1fn_x2 (FP4, two values per
    element so K = 2·size(1); out bf16; CUDA >= 12.8, sm100+). FP4 needs ``x_scale`` /
    ``w_scale``: float8_e4m3fn block scales, one per 16 values along K, in the 128x4 tiled
    layout (:func:`slidesparse.gemm.fp4.swizzle`), and takes ``alpha`` (the product of the
    per-tensor global scales; 1.0 for every other dtype). ``separate_c``: hand cuBLASLt a C
    pointer other than the output (never read, beta = 0); None does what torch does: separate
    for FP8 (``torch._scaled_mm``), in place otherwise (FP4 only in place).
    """
    if separate_c is None:
        separate_c = x.dtype == torch.float8_e4m3fn
    if x_scale is None and w_scale is None and alpha == 1.0:
        return _op("cublaslt_mm")(x, w, out_dtype, algo_index, separate_c)
    return _op("cublaslt_mm")(x, w, out_dtype, algo_index, separate_c, x_scale, w_scale, alpha)


def cusparselt_compress(w_slide: torch.Tensor, layout: int = 0) -> torch.Tensor:
    """cuSPARSELt's compressed form (uint8 buffer) of a 2:4 weight ``w_slide[N, K_slide]``.

    ``layout`` 0..3 as in :func:`cusparselt_mm`; only its bit 0 (W as K_slide x N column-major
    used transposed, or N x K_slide row-major as torch describes it) shapes the buffer, so one
    buffer per bit-0 value serves every algorithm and both activation descriptions. An FP4
    weight (float4_e2m1fn_x2, [N, K_slide/2]) must be paired 4:8, not 2:4 (see
    :mod:`slidesparse.gemm.fp4`); its block scales go to :func:`cusparselt_mm`, not here.
    """
    return _op("cusparselt_compress")(w_slide, layout)


def cusparselt_mm(
    compressed: torch.Tensor,
    x: torch.Tensor,
    N: int,
    out_dtype: torch.dtype,
    alg_id: int = 0,
    split_k: int = 1,
    split_k_mode: int = -1,
    layout: int = 0,
    w_scale: torch.Tensor | None = None,
    x_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """2:4 sparse ``Y[M, N] = x[M, K_slide] · W[N, K_slide]ᵀ`` from ``compressed`` W.

    ``split_k``: 1 (none), k > 1, or -1 (Segment-K, sm90+); ``split_k_mode``: -1 (library
    default), 1 (one kernel), 2 (two kernels); ``layout``: bit 0 describes W (0: column-major
    transposed, 1: row-major; must match how ``compressed`` was made), bit 1 describes x
    (0: K_slide x M column-major, 1: M x K_slide row-major transposed); 3 is torch's
    description. Plans are cached per configuration. FP4 (x float4_e2m1fn_x2 [M, K_slide/2],
    out bf16/fp16) needs ``w_scale`` / ``x_scale``: float8_e4m3fn block scales, one per 32
    values along K_slide, in the 128x4 tiled layout; a plan is built per pair of scale
    tensors, so reuse them across calls.
    """
    args = (compressed, x, N, x.dtype, out_dtype, alg_id, split_k, split_k_mode, layout)
    if w_scale is None and x_scale is None:
        return _op("cusparselt_mm")(*args)
    return _op("cusparselt_mm")(*args, w_scale, x_scale)


def cusparselt_plan_info(
    x: torch.Tensor,
    N: int,
    out_dtype: torch.dtype,
    alg_id: int = 0,
    split_k: int = 1,
    split_k_mode: int = -1,
    layout: int = 0,
    w_scale: torch.Tensor | None = None,
    x_scale: torch.Tensor | None = None,
) -> dict:
    """``{"max_alg_id", "workspace_bytes"}`` of one cuSPARSELt configuration (builds its plan).

    FP4 takes the block scales the plan will run with, as :func:`cusparselt_mm` does.
    """
    args = (x, N, x.dtype, out_dtype, alg_id, split_k, split_k_mode, layout)
    if w_scale is None and x_scale is None:
        max_id, ws = _op("cusparselt_plan_info")(*args)
    else:
        max_id, ws = _op("cusparselt_plan_info")(*args, w_scale, x_scale)
    return {"max_alg_id": max_id, "workspace_bytes": ws}


def cusparselt_version() -> int:
    """CUSPARSELT_VERSION of the headers the extension was built with (major·1e6 + minor·100)."""
    return _op("cusparselt_version")()
