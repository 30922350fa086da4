"""Linear backends of the engine: ``bf16``, ``w8a8`` (dense) and ``slidesparse`` (2_L).

Each backend is an ``nn.Module`` with ``forward(x [..., K]) -> [..., N]`` (bf16 in and out),
so one engine instance swaps every linear layer by building it with another backend. The
quantized backends are three registered custom ops in a row, each with a fake, so
``torch.compile`` sees opaque nodes of known shape and a CUDA graph captures the launches:

* w8a8:        quant_only(x) -> engine_mm(q, W_q)            -> dequant_bias
* slidesparse: quant_slide(x) -> engine_mm(q_lift, W_slide)  -> dequant_bias

or, on the CUTLASS kinds (``cutlass`` dense, ``cutlass-sparse`` 2:4), two: the scales and the
bias are applied in the GEMM's epilogue (``engine_scaled_mm``), with no dequant pass. With
``--gemm auto`` a linear holds its weight in both kinds' forms and runs, per padded M, the
route the router timed faster (:class:`slidesparse.engine.algos.Router`).

``engine_mm`` (defined here) is the raw GEMM ``acc[M_pad, N] = q · Wᵀ`` on the GEMM backend
picked for the engine: cuBLASLt / cuSPARSELt from the csrc extension on a GPU (algorithm from
the GPU tag's search cache, see :mod:`slidesparse.engine.algos`), torch's built-ins where the
extension cannot load, and ``cpu-ref`` on a CPU: an fp64 matmul of the quantized values.
fp64 is exact there for both operand types (INT8 products are integers below 2^14; E4M3
values are multiples of 2^-9, so every product is a multiple of 2^-18 below 2^17.6 and any
sum of fewer than ~170,000 of them fits fp64's 53 bits), hence the CPU slide path equals the
dense path bit for bit for INT8 and FP8 alike.

Weights are quantized per output channel, symmetric, by :func:`quantize_weight`, *before*
the slide: sliding only moves values and inserts zeros, so both backends hold the same
quantized numbers and the same scales.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slidesparse.core.dtypes import dtype_name
from slidesparse.kernels import numerics

BACKENDS = ("bf16", "w8a8", "slidesparse")
QMAX = {torch.int8: 127.0, torch.float8_e4m3fn: 448.0}
# The engine's GEMM output per operand dtype: INT8 accumulates exactly into INT32; FP8 writes
# BF16, as the kernel matrix's FP8 cells do, so search-cache entries are shared with it.
ACC_DTYPE = {torch.int8: torch.int32, torch.float8_e4m3fn: torch.bfloat16}
GEMM_KINDS = ("cpu-ref", "cublaslt", "cusparselt", "torch-builtin", "torch-cslt")
# Kinds whose GEMM applies the scales and bias itself and writes bf16.
FUSED_KINDS = ("cutlass", "cutlass-sparse")

__all__ = [
    "BACKENDS",
    "FUSED_KINDS",
    "Bf16Linear",
    "QuantLinear",
    "engine_mm",
    "engine_scaled_mm",
    "probe",
    "quantize_weight",
]

# Set by :func:`probe`: CUDA events (start, quantized, GEMM done, end) of every eager forward,
# so a benchmark can split a real step's time without running the linears apart from it.
_PROBE: list | None = None


class probe:
    """``with probe() as ev:`` records CUDA events around every eager linear forward.

    ``ev`` gets one (start, after quant, after GEMM, end) tuple per call (bf16: the middle
    two are start and end). Not for CUDA-graph capture or torch.compile (the default None
    keeps the forward free of it)."""

    def __enter__(self) -> list:
        global _PROBE
        _PROBE = []
        return _PROBE

    def __exit__(self, *exc) -> None:
        global _PROBE
        _PROBE = None


def _event():
    e = torch.cuda.Event(enable_timing=True)
    e.record()
    return e


# --- the GEMM op ---------------------------------------------------------------------------


@torch.library.custom_op("slidesparse::engine_mm", mutates_args=())
def engine_mm(
    x: torch.Tensor, w: torch.Tensor, N: int, kind: str, out_dtype: torch.dtype, cfg: list[int]
) -> torch.Tensor:
    """``acc[M, N] = x[M, K'] · W[N, K']ᵀ`` on GEMM backend ``kind`` with config ``cfg``.

    x: int8 / float8_e4m3fn, contiguous. w: the weight in ``kind``'s form: [N, K'] of x's
    dtype (cpu-ref, cublaslt, torch-builtin) or a compressed 2:4 buffer (cusparselt,
    torch-cslt). cfg: cublaslt ``[algo_index, separate_c]``; cusparselt ``[alg_id, split_k,
    split_k_mode, layout]``; torch-cslt ``[alg_id, split_k, split_k_mode]``; others ``[]``.
    """
    if kind == "cpu-ref":
        y = x.double() @ w.double().T  # exact, see the module docstring
        return y.round().to(out_dtype) if out_dtype == torch.int32 else y.to(out_dtype)
    if kind == "cublaslt":
        from slidesparse.native import ops

        return ops.cublaslt_mm(x, w, out_dtype, cfg[0], bool(cfg[1]))
    if kind == "cusparselt":
        from slidesparse.native import ops

        return ops.cusparselt_mm(w, x, N, out_dtype, cfg[0], cfg[1], cfg[2], cfg[3])
    if kind == "torch-cslt":
        # torch wants the activation as a transposed view; transpose_result gives [M, N].
        return torch._cslt_sparse_mm(w, x.T, None, None, out_dtype, True, cfg[0], cfg[1], cfg[2])
    if kind == "torch-builtin":
        if x.dtype == torch.int8:
            return torch._int_mm(x, w.T)
        one = torch.ones((), device=x.device, dtype=torch.float32)
        return torch._scaled_mm(x, w.T, one, one, out_dtype=out_dtype)
    raise ValueError(f"engine_mm: unknown GEMM kind {kind!r}; valid: {', '.join(GEMM_KINDS)}")


@engine_mm.register_fake
def _engine_mm_fake(x, w, N, kind, out_dtype, cfg):
    torch._check(x.dim() == 2, lambda: f"engine_mm: x must be 2-D, got {x.dim()}-D")
    if kind in ("cpu-ref", "cublaslt", "torch-builtin"):
        torch._check(w.dim() == 2 and w.shape[0] == N, lambda: "engine_mm: w must be [N, K]")
        torch._check(
            w.shape[1] == x.shape[1],
            lambda: f"engine_mm: K of x ({x.shape[1]}) and w ({w.shape[1]}) differ",
        )
    return x.new_empty((x.shape[0], N), dtype=out_dtype)


@torch.library.custom_op("slidesparse::engine_scaled_mm", mutates_args=())
def engine_scaled_mm(
    x: torch.Tensor,
    w: torch.Tensor,
    meta: torch.Tensor | None,
    scale_x: torch.Tensor,
    scale_w: torch.Tensor,
    bias: torch.Tensor | None,
    N: int,
    kind: str,
    cfg: list[int],
) -> torch.Tensor:
    """``y[M, N] = bf16(x·Wᵀ · scale_x[M] · scale_w[N] + bias[N])`` on a CUTLASS kind.

    x: [M, K'] int8 / float8_e4m3fn; w: [N, K'] (``cutlass``) or CUTLASS's compressed 2:4
    weight with its metadata ``meta`` (``cutlass-sparse``); cfg: ``[configuration index,
    swizzle, raster]``.
    """
    from slidesparse.native import cutlass

    fam = cutlass.family(dtype_name(x.dtype), kind == "cutlass-sparse")
    return cutlass.scaled_mm(fam, cfg[0], x, w, meta, scale_x, scale_w, bias, N, cfg[1], cfg[2])


@engine_scaled_mm.register_fake
def _engine_scaled_mm_fake(x, w, meta, scale_x, scale_w, bias, N, kind, cfg):
    torch._check(x.dim() == 2, lambda: f"engine_scaled_mm: x must be 2-D, got {x.dim()}-D")
    return x.new_empty((x.shape[0], N), dtype=torch.bfloat16)


# --- weight quantization -------------------------------------------------------------------


def quantize_weight(w: torch.Tensor, qdtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric quantization: w [N, K] -> (q [N, K] qdtype, scale [N] fp32).

    ``scale[n] = max(absmax(w[n]), 1e-12) / QMAX``; INT8 rounds half to even then clamps to
    +-127, FP8 clamps to +-448 then casts (round to nearest even), the activation contract of
    :mod:`slidesparse.kernels.numerics`. Zeros stay zeros, so a pruned pattern survives.
    """
    qmax = QMAX[qdtype]
    amax = w.float().abs().amax(dim=1).clamp_min(numerics.AMAX_FLOOR)  # [N]
    qmax_t = torch.full_like(amax, qmax)
    scale = amax / qmax_t
    y = w.float() * (qmax_t / amax)[:, None]
    y = y.clamp(-qmax, qmax)
    q = torch.round(y).to(torch.int8) if qdtype == torch.int8 else y.to(qdtype)
    return q, scale


# --- modules -------------------------------------------------------------------------------


class Bf16Linear(nn.Module):
    """The reference: ``y = x · Wᵀ + b`` in bf16 (torch's cuBLAS GEMM)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.N, self.K = weight.shape
        self.register_buffer("weight", weight, persistent=False)  # [N, K] bf16
        self.register_buffer("bias", bias, persistent=False)  # [N] or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _PROBE is not None:
            e0 = _event()
            y = F.linear(x, self.weight, self.bias)
            e1 = _event()
            _PROBE.append((e0, e0, e1, e1))
            return y
        return F.linear(x, self.weight, self.bias)

    def weight_bytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()


class QuantLinear(nn.Module):
    """W8A8 linear on the quant kernels: dense (``pattern`` None) or SlideSparse 2_L.

    ``forms``: GEMM kind -> the weight in that kind's form (see :func:`engine_mm`) and its 2:4
    metadata (``cutlass-sparse``; else None). One kind, or (``--gemm auto``) a fused-scale
    CUTLASS kind and a cuBLASLt / cuSPARSELt one: then ``selector`` (an
    :class:`slidesparse.engine.algos.Router`) times both whole linears on the first eager
    forward at each padded M and keeps the faster. Dense kinds share one tensor. w_scale [N]
    fp32; bias [N] bf16 or None.
    """

    def __init__(
        self,
        *,
        N: int,
        K: int,
        qdtype: torch.dtype,
        pattern: str | None,
        forms: dict[str, tuple[torch.Tensor, torch.Tensor | None]],
        w_scale: torch.Tensor,
        bias: torch.Tensor | None,
        selector=None,
        name: str = "",
    ):
        super().__init__()
        self.N, self.K = N, K
        self.qdtype = qdtype
        self.pattern = pattern  # None: dense w8a8
        self.kinds = tuple(forms)
        self.selector = selector
        self.name = name
        for i, (w, meta) in enumerate(forms.values()):  # buffers, so .to() moves every form
            self.register_buffer(f"weight_{i}", w, persistent=False)
            self.register_buffer(f"meta_{i}", meta, persistent=False)
        self.register_buffer("w_scale", w_scale, persistent=False)  # [N] fp32
        self.register_buffer("bias", bias, persistent=False)  # [N] bf16 or None
        # (M_pad, gated) -> (kind, its GEMM cfg): the route a forward at that M_pad runs.
        self.routes: dict[tuple[int, bool], tuple[str, list[int]]] = {}

    def form(self, kind: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, 2:4 metadata or None) in GEMM ``kind``'s form."""
        i = self.kinds.index(kind)
        return getattr(self, f"weight_{i}"), getattr(self, f"meta_{i}")

    @property
    def weight(self) -> torch.Tensor:
        """The first kind's weight."""
        return self.weight_0

    def quantize(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x2 [M, K] -> (q [M_pad, K_pad | K_slide], scale_a [M_pad])."""
        # Imported here, not at module load: importing triton must wait until a CPU run has
        # switched the interpreter on (slidesparse.engine.generate does so).
        from slidesparse.kernels import ops as kops

        if self.pattern is None:
            return kops.quant_only(x2, self.qdtype)
        return kops.quant_slide(x2, self.pattern, self.qdtype)

    def route(self, q: torch.Tensor, scale_a: torch.Tensor, gated: bool = False):
        """(kind, cfg) a forward of q [M_pad, K'] runs on: picked (searched, timed) once per
        (M_pad, gated), eagerly, then reused (also by a CUDA-graph capture)."""
        key = (q.shape[0], gated)
        hit = self.routes.get(key)
        if hit is None:
            if self.selector is None:
                hit = (self.kinds[0], [])
            else:
                run = lambda kind, cfg: self.run(kind, cfg, q, scale_a, q.shape[0], gated)  # noqa: E731
                hit = self.selector.route(self, q, run, gated)
            self.routes[key] = hit
        return hit

    def gemm(self, q: torch.Tensor, scale_a: torch.Tensor, gated: bool = False) -> torch.Tensor:
        """The GEMM alone of a quantized activation q [M_pad, K'], on the route of
        (M_pad, gated): acc [M_pad, N] (int32 / bf16, unscaled), or on a fused kind the
        scaled, biased bf16 output [M_pad, N]."""
        kind, cfg = self.route(q, scale_a, gated)
        return self._gemm(kind, cfg, q, scale_a)

    def _gemm(self, kind, cfg, q, scale_a):
        w, meta = self.form(kind)
        if kind in FUSED_KINDS:
            return engine_scaled_mm(
                q, w, meta, scale_a, self.w_scale, self.bias, self.N, kind, cfg
            )  # fmt: skip
        return engine_mm(q, w, self.N, kind, ACC_DTYPE[self.qdtype], cfg)

    def run(self, kind, cfg, q, scale_a, M: int, gated: bool, ev=None, out=torch.bfloat16):
        """One route's GEMM and what follows it: [M, N] ``out`` (gated: SiLU-and-mul of the
        two halves, [M, N / 2]). ``ev`` collects a CUDA event after the GEMM (the probe)."""
        acc = self._gemm(kind, cfg, q, scale_a)  # [M_pad, N]
        if ev is not None:
            ev.append(_event())
        from slidesparse.engine import fused as fk
        from slidesparse.kernels import ops as kops

        if kind in FUSED_KINDS:
            y = acc if acc.shape[0] == M else acc[:M]  # row slices stay contiguous
        elif gated and self.bias is None:
            # dequant and SiLU-and-mul in one pass over the accumulator
            return fk.dequant_silu_mul(acc, scale_a, self.w_scale, M)
        else:
            if acc.shape[0] != M:
                acc, scale_a = acc[:M], scale_a[:M]  # row slices stay contiguous
            y = kops.dequant_bias(acc, scale_a, self.w_scale, self.bias, out)
        if gated:
            return fk.silu_mul(y)
        return y

    def forward(self, x: torch.Tensor, gated: bool = False) -> torch.Tensor:
        """x [..., K] bf16 -> [..., N] bf16; ``gated``: SiLU(first half) * second half,
        [..., N / 2], fused into the dequant pass where there is one (the engine's gate_up
        on its Triton kernels)."""
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.K)  # [M, K]
        M = x2.shape[0]
        ev = None if _PROBE is None else [_event()]
        q, scale_a = self.quantize(x2)  # M padded to 16 by the kernels
        if ev:
            ev.append(_event())
        kind, cfg = self.route(q, scale_a, gated)
        y = self.run(kind, cfg, q, scale_a, M, gated, ev, x.dtype)
        if ev:
            ev.append(_event())
            _PROBE.append(tuple(ev))
        return y.view(*lead, y.shape[-1])

    def weight_bytes(self) -> int:
        """Bytes of the weight a forward reads: the form of the route at the smallest M_pad
        picked so far (a decode step's), else the first kind's."""
        kind = min(self.routes.items())[1][0] if self.routes else self.kinds[0]
        w, meta = self.form(kind)
        return sum(t.numel() * t.element_size() for t in (w, meta) if t is not None)
