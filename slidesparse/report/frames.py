"""Store frames made ready for the reports: plain columns, one row per cell, stable orders.

Pure pandas over store frames (:meth:`slidesparse.results.store.Store.read`). Cells: rows
equal on :data:`slidesparse.results.store.KEY_COLUMNS` describe one cell; the latest ok row
wins, else the latest row (older rows stay in the store as history).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import pandas as pd

from slidesparse.core import metrics
from slidesparse.results.store import KEY_COLUMNS as _KEY

_INT_COLS = ("M", "N", "K", "K_slide", "alg_id", "split_k", "workspace_bytes", "n_samples")


def sparse_order() -> tuple[str, ...]:
    from slidesparse.core.sparsity import ALL_SPARSE

    return ALL_SPARSE


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    """A store frame with plain pandas dtypes: strings as object/None, numbers as float/Int64."""
    out = pd.DataFrame(index=range(len(frame)))
    for col in frame.columns:
        s = frame[col].reset_index(drop=True)
        if col in _INT_COLS:
            out[col] = pd.array(s.astype("float64"), dtype="Int64") if len(s) else s.astype("Int64")
        elif col == "started_at":
            out[col] = pd.to_datetime(s.astype(object), utc=True)
        elif pd.api.types.is_float_dtype(s.dtype) or str(s.dtype).startswith(("double", "float")):
            out[col] = s.astype("float64")
        else:
            out[col] = s.astype(object).where(s.notna(), None)
    return out


def name_quant_kernels(frame: pd.DataFrame) -> pd.DataFrame:
    """kernel-quant rows named by their kernel: ``backend`` := kernel, ``mode`` := "quant".

    A quant row's identity is its kernel (quant_only, quant_slide, dequant_bias); its backend
    is null on rows the runner wrote for a skip or failure and "triton" on measured ones, and
    its mode differs the same way. Naming both from the kernel makes a skipped row and a later
    measured row one cell, and lets every table label the row by what was timed.
    """
    if frame.empty or "kernel" not in frame:
        return frame
    quant = (frame["task"] == "kernel-quant") & frame["kernel"].notna()
    if not quant.any():
        return frame
    f = frame.copy()
    f.loc[quant, "backend"] = f.loc[quant, "kernel"]
    f.loc[quant, "mode"] = "quant"
    return f


def resolve_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: its latest ok row, else its latest row (quant rows named by kernel)."""
    if frame.empty:
        return frame.copy()
    f = name_quant_kernels(frame).copy()
    f["_ok"] = (f["status"] == "ok").astype(int)
    f["_key"] = ["|".join(map(str, t)) for t in zip(*(f[c] for c in _KEY), strict=True)]
    f = f.sort_values(["_key", "_ok", "started_at", "row_id"], kind="stable")
    return (
        f.groupby("_key", sort=False).tail(1).drop(columns=["_ok", "_key"]).reset_index(drop=True)
    )


def order_models(models: Iterable[str]) -> list[str]:
    """Models in the order of docs/method.md, "Models" (smallest first); unknown ones after."""
    try:
        from slidesparse.core.models import MODELS

        known = list(MODELS)
    except ImportError:  # models.py not installed in a stripped tree
        known = []
    models = [m for m in dict.fromkeys(models) if m is not None]
    return [m for m in known if m in models] + sorted(m for m in models if m not in known)


def order_patterns(patterns: Iterable[str]) -> list[str]:
    """Patterns in L order (2_4 ... 2_16, 2_inf)."""
    rank = {p: i for i, p in enumerate(sparse_order())}
    return sorted(set(patterns), key=lambda p: (rank.get(p, 99), p))


def present(v) -> bool:
    """Whether a cell value is recorded (not None, NaN, NA or an empty string)."""
    if v is None or (pd.api.types.is_scalar(v) and pd.isna(v)):
        return False
    return not (isinstance(v, str) and v == "")


def variant(backend: str | None, sparsity: str | None) -> str:
    """A row's backend/pattern label: ``cublaslt``, ``cutlass``, ``cusparselt 2_8``.

    A row without a backend (a skip or failure recorded before the task named one) is
    labelled ``-``.
    """
    name = backend if present(backend) else "-"
    return name if not present(sparsity) or sparsity == "dense" else f"{name} {sparsity}"


def order_variants(labels: Iterable[str]) -> list[str]:
    """Dense backends first (CUTLASS, cuBLASLt, ...), then sparse ones in L order."""
    rank = {p: i for i, p in enumerate(sparse_order())}

    def key(label: str):
        backend, _, pattern = label.partition(" ")
        if not pattern:
            dense = (
                metrics.DENSE_PREFERENCE.index(backend)
                if backend in metrics.DENSE_PREFERENCE
                else 50
            )
            return (0, dense, backend, 0)
        return (1, 0, backend, rank.get(pattern, 99))

    return sorted(set(labels), key=key)


# ------------------------------------------------------------------------ bookkeeping


def recorded_times(frame: pd.DataFrame) -> tuple[datetime | None, datetime | None]:
    """First and last recorded start times (legacy sentinels at the epoch are ignored)."""
    if frame.empty:
        return None, None
    t = pd.to_datetime(frame["started_at"], utc=True)
    t = t[t > pd.Timestamp("1971-01-01", tz="UTC")]
    if t.empty:
        return None, None
    return t.min().to_pydatetime(), t.max().to_pydatetime()


def task_times(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells and summed duration_s per task (NaN where no duration was recorded)."""
    if frame.empty:
        return pd.DataFrame(columns=["task", "rows", "duration_s"])
    g = frame.groupby("task", sort=True)
    out = g.agg(rows=("task", "size"), duration_s=("duration_s", lambda s: s.sum(min_count=1)))
    return out.reset_index()
