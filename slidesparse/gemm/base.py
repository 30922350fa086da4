"""The interface every GEMM backend implements.

The task drives a backend in four steps: ``prepare_weight`` once per (N, K, pattern, dtype)
(slide, cast, compress), ``prepare_input`` once per M (lift, cast), ``candidates`` for the
algorithm search, and ``make_call`` for the closure that is checked and timed. Operands come
in as fp32 values exact in the operand dtype (see :mod:`slidesparse.gemm.operands`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slidesparse.core.errors import Unsupported


@dataclass
class PreparedWeight:
    """A weight in the form a backend consumes, plus what the result row reports."""

    N: int
    K: int
    K_slide: int  # == K for dense backends
    dtype: str
    out_dtype: str
    pattern: Any  # slidesparse.core.sparsity.Pattern
    data: Any  # backend-specific: a cast tensor, a compressed buffer, ...
    extra: dict = field(default_factory=dict)


class GemmBackend:
    """Base class: a backend with no algorithm choice and nothing to prepare beyond a cast."""

    name = "base"
    sparse = False
    # Operand dtype -> the raw outputs this backend can write from it.
    out_dtypes: dict[str, tuple[str, ...]] = {}  # noqa: RUF012 - a per-class table, never mutated

    def __init__(self, device: str):
        self.device = device

    def check_out_dtype(self, dtype: str, out_dtype: str) -> None:
        """Unsupported unless this backend writes ``out_dtype`` from ``dtype`` operands."""
        if out_dtype not in self.out_dtypes.get(dtype, ()):
            writes = ", ".join(self.out_dtypes.get(dtype, ())) or "nothing"
            raise Unsupported(
                f"{self.name} cannot write {out_dtype} from {dtype}; it writes {writes}"
            )

    def prepare_weight(self, w_values, pattern, dtype: str, out_dtype: str) -> PreparedWeight:
        """``w_values[N, K]`` (pruned fp32 values) in this backend's form."""
        raise NotImplementedError

    def prepare_input(self, x_values, weight: PreparedWeight) -> Any:
        """``x_values[M, K]`` (fp32 values) in this backend's form for ``weight``."""
        raise NotImplementedError

    def candidates(self, weight: PreparedWeight, inp: Any) -> list[dict]:
        """Configurations the search may try; one empty config where there is no choice."""
        return [{}]

    def vet_candidates(
        self, weight: PreparedWeight, inp: Any, candidates: list[dict], *, cache_dir, gpu_tag: str
    ) -> tuple[list[dict], dict[str, dict]]:
        """(candidates safe to run in this process, {key: verdict} of those left out).

        Backends whose library can kill the process on some configurations check them in a
        child first (:func:`slidesparse.gemm.probe.vet`); the rest trust every candidate.
        """
        return candidates, {}

    def reference(self, weight: PreparedWeight, inp: Any, rows) -> tuple[Any, Any] | None:
        """(reference, |reference| bound) for ``rows`` when this backend computes on values
        other than the operands it was given (block-scaled FP4); None: the task's own."""
        return None

    def make_call(self, weight: PreparedWeight, inp: Any, config: dict) -> Callable[[], Any]:
        """A no-argument closure computing ``Y[M, N]`` with ``config``."""
        raise NotImplementedError

    def describe(self, weight: PreparedWeight, config: dict) -> dict:
        """Row fields naming what ran: kernel, alg_id, split_k, workspace_bytes."""
        return {"kernel": self.name}
