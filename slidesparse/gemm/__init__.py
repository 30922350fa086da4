"""GEMM backends: one registry, one interface, metadata recorded by a decorator.

A backend computes ``Y[M, N] = X[M, K] · W[N, K]ᵀ`` for one operand dtype. Dense backends
take the pruned weight as it is; sparse backends take it slid to ``K_slide`` (docs/method.md,
"The transform") and the activation lifted the same way, so both compute the same product.
Each backend is a class registered with :func:`register_backend`, which records what it
needs (CUDA, a minimum compute capability, the csrc extension, the dtypes it implements) so
that the
``kernel-gemm`` task can turn an impossible cell into ``Unsupported(reason)`` before any
work, and :func:`select_backend` can fall back from csrc to torch built-ins.

Backend modules are imported on first use: importing this package never imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slidesparse.core.dtypes import DTYPES
from slidesparse.core.errors import Unsupported, UserError

# Where each backend class lives.
_BACKEND_MODULES = {
    "cpu-ref": "slidesparse.gemm.cpu_ref",
    "torch-builtin": "slidesparse.gemm.torch_builtin",
    "torch-cslt": "slidesparse.gemm.torch_builtin",
    "cublaslt": "slidesparse.gemm.csrc_backends",
    "cusparselt": "slidesparse.gemm.csrc_backends",
    "cutlass": "slidesparse.gemm.cutlass_backends",
    "cutlass-sparse": "slidesparse.gemm.cutlass_backends",
}


@dataclass(frozen=True)
class BackendSpec:
    """A registered backend and what it needs to run."""

    name: str
    sparse: bool | None  # slid 2:4 weights (True), the dense weight (False), both (None)
    baseline: bool  # the dense reference other backends are compared with
    needs_cuda: bool
    needs_extension: bool  # needs the csrc extension (slidesparse.native.extension)
    dtypes: tuple[str, ...]
    min_cc: tuple[int, int] | None  # None: any device this backend runs on
    cls: type
    fallback: str | None = None  # backend to use where this one cannot be loaded
    needs_cutlass: bool = False  # needs the CUTLASS library (slidesparse.native.cutlass)
    max_cc: tuple[int, int] | None = None  # None: any newer device too (sm90a code: 9.0 only)


_REGISTRY: dict[str, BackendSpec] = {}


def register_backend(
    name: str,
    *,
    sparse: bool | None,
    baseline: bool = False,
    needs_cuda: bool = True,
    needs_extension: bool = False,
    dtypes: tuple[str, ...] = DTYPES,
    min_cc: tuple[int, int] | None = None,
    fallback: str | None = None,
    needs_cutlass: bool = False,
    max_cc: tuple[int, int] | None = None,
) -> Callable[[type], type]:
    """Class decorator: register ``cls`` as backend ``name`` with its metadata."""
    unknown = set(dtypes) - set(DTYPES)
    if unknown:
        raise ValueError(f"backend {name}: unknown dtypes {sorted(unknown)}")

    def deco(cls: type) -> type:
        # The class answers for the name in messages and writes what it declares: a
        # decorator on the wrong class (a shared base) would register a backend of nothing.
        # (A dispatcher picks its class per pattern with ``for_pattern``.)
        named = getattr(cls, "name", None) == name and getattr(cls, "out_dtypes", None)
        if not named and not hasattr(cls, "for_pattern"):
            raise TypeError(f"backend {name}: {cls.__name__} must set name={name!r} and out_dtypes")
        _REGISTRY[name] = BackendSpec(
            name=name,
            sparse=sparse,
            baseline=baseline,
            needs_cuda=needs_cuda,
            needs_extension=needs_extension,
            dtypes=tuple(dtypes),
            min_cc=min_cc,
            cls=cls,
            fallback=fallback,
            needs_cutlass=needs_cutlass,
            max_cc=max_cc,
        )
        return cls

    return deco


def backend_names() -> list[str]:
    """Every backend name the registry knows (whether or not it can run here)."""
    return list(_BACKEND_MODULES)


def get_spec(name: str) -> BackendSpec:
    """The spec of backend ``name``, importing its module on first use."""
    if name not in _BACKEND_MODULES:
        raise UserError(
            f"unknown GEMM backend {name!r}; valid backends: {', '.join(_BACKEND_MODULES)}"
        )
    if name not in _REGISTRY:
        importlib.import_module(_BACKEND_MODULES[name])
    return _REGISTRY[name]


def check_dtype(dtype: str) -> str:
    """``dtype`` if it names an operand dtype, else a UserError listing the valid ones."""
    if dtype not in DTYPES:
        raise UserError(f"unknown GEMM dtype {dtype!r}; valid dtypes: {', '.join(DTYPES)}")
    return dtype


def unsupported_reason(
    spec: BackendSpec,
    dtype: str,
    *,
    device: str,
    cc: tuple[int, int] | None,
    dtype_ok_on_cc: Callable[[str, bool], bool] | None = None,
    extension_error: str | None = None,
    cutlass_error: str | None = None,
) -> str | None:
    """Why ``spec`` cannot run ``dtype`` here, or None when it can.

    ``dtype_ok_on_cc(dtype, sparse)`` answers for the GPU (slidesparse.core.hardware's
    ``Capabilities.supports``); ``extension_error`` is the csrc build/load failure, if any;
    ``cutlass_error`` the CUTLASS library's.
    """
    if dtype not in spec.dtypes:
        return f"backend {spec.name} does not implement {dtype}"
    if spec.needs_cuda:
        if device != "cuda" or cc is None:
            return "no CUDA device"
        if spec.min_cc is not None and tuple(cc) < spec.min_cc:
            return f"backend {spec.name} needs compute capability >= {spec.min_cc}, got {cc}"
        if spec.max_cc is not None and tuple(cc) > spec.max_cc:
            return (f"backend {spec.name} is built for compute capability <= {spec.max_cc} "
                    f"only, got {cc}")  # fmt: skip
        if dtype_ok_on_cc is not None and not dtype_ok_on_cc(dtype, bool(spec.sparse)):
            kind = "2:4 sparse" if spec.sparse else "dense"
            return f"no {kind} {dtype} GEMM on compute capability {cc[0]}.{cc[1]}"
    if spec.needs_extension and extension_error:
        return f"csrc extension unavailable: {extension_error}"
    if spec.needs_cutlass and cutlass_error:
        return f"CUTLASS library unavailable: {cutlass_error}"
    return None


def select_backend(
    name: str, dtype: str, *, device: str, cc: tuple[int, int] | None, **checks: Any
) -> BackendSpec:
    """The spec to run for ``name``: itself, or its fallback where only the extension is missing.

    Raises ``Unsupported`` with the reason when neither can run ``dtype`` here. A fallback runs
    under its own backend name, so rows never claim a kernel that did not run.
    """
    spec = get_spec(name)
    reason = unsupported_reason(spec, dtype, device=device, cc=cc, **checks)
    if reason is None:
        return spec
    if spec.fallback and reason.startswith("csrc extension unavailable"):
        fb = get_spec(spec.fallback)
        fb_reason = unsupported_reason(fb, dtype, device=device, cc=cc, **checks)
        if fb_reason is None:
            return fb
        reason = f"{reason}; fallback {fb.name}: {fb_reason}"
    raise Unsupported(reason)


def pattern_reason(spec: BackendSpec, pattern) -> str | None:
    """Why ``spec`` cannot run ``pattern``: a dense backend and a sparse pattern, or the reverse."""
    if spec.sparse is True and pattern.is_dense:
        return f"backend {spec.name} runs sparse patterns only; dense runs on a dense backend"
    if spec.sparse is False and not pattern.is_dense:
        return f"backend {spec.name} is dense; pattern {pattern.name} needs a sparse backend"
    return None


def make_backend(spec: BackendSpec, device: str, pattern):
    """An instance of ``spec``'s backend for ``pattern`` on ``device``."""
    reason = pattern_reason(spec, pattern)
    if reason:
        raise Unsupported(reason)
    factory = getattr(spec.cls, "for_pattern", None)
    return factory(device, pattern) if factory else spec.cls(device)


def baseline_names() -> list[str]:
    """Backends registered as dense baselines."""
    return [n for n in _BACKEND_MODULES if get_spec(n).baseline]
