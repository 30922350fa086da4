"""Pass tables and failure mining: what ran, what did not, and the factor failures share."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from slidesparse.report.frames import present, variant

# Elements a 32-bit index reaches: larger tensors crashed fused kernels of other kits.
INT32_MAX = 2**31 - 1

# ------------------------------------------------------------------------ pass tables


def pass_counts(cells: pd.DataFrame, tasks: Iterable[str]) -> pd.DataFrame:
    """Cells per (task, dtype, mode, variant, column): ok, measured, skipped and total.

    ``column`` is the model ("" for square GEMMs), or the output dtype for kernel-quant (no
    model there). A skipped cell was never measured: ``measured`` = total - skipped, and a
    pass rate is ok / measured.
    """
    cols = ["task", "dtype", "mode", "variant", "model", "column"]
    cols += ["ok", "measured", "skipped", "total"]
    f = cells[cells["task"].isin(list(tasks))] if not cells.empty else cells
    f = f[f["layer"].fillna("") != "total"] if not f.empty else f
    if f.empty:
        return pd.DataFrame(columns=cols)
    model = f["model"].fillna("")
    out_dtype = f["out_dtype"].fillna("") if "out_dtype" in f else model.map(lambda _: "")
    skipped = (f["status"] == "skipped").astype(int)
    f = f.assign(
        variant=[variant(b, s) for b, s in zip(f["backend"], f["sparsity"], strict=True)],
        model=model,
        column=model.where(f["task"] != "kernel-quant", out_dtype),
        dtype=f["dtype"].fillna("-"),
        mode=f["mode"].fillna("-"),
        ok=(f["status"] == "ok").astype(int),
        skipped=skipped,
        measured=1 - skipped,
    )
    g = f.groupby(["task", "dtype", "mode", "variant", "model", "column"], sort=False)
    out = g.agg(
        ok=("ok", "sum"),
        measured=("measured", "sum"),
        skipped=("skipped", "sum"),
        total=("ok", "size"),
    )
    return out.reset_index()[cols]


# ------------------------------------------------------------------------ failure mining

_DIMS = ("model", "backend", "sparsity", "dtype", "M", "layer", "mode")
_SHARED = ("model", "backend", "sparsity", "dtype", "M")


def failure_groups(cells: pd.DataFrame, models: dict | None = None) -> list[dict]:
    """Group failed cells and state what they share, with data-derived recommendations.

    Failures are grouped by (task, error class), and further by model when they share none
    of model, backend, pattern, dtype and M. Each group: task, error_class, n, message (the
    most common error text), factors (dims with one value), every (dims whose every value
    in that context failed), values (other dims: the values that failed), m_from (the
    failures are exactly the cells with M >= this), exclusive (every cell sharing the
    factors failed), hints and a recommendation.
    """
    return _mine(cells, "failed", models or {})


def skip_groups(cells: pd.DataFrame, models: dict | None = None) -> list[dict]:
    """Group skipped cells by task and reason and state what they share.

    Same fields as :func:`failure_groups`, grouped by (task, reason) where a reason is the
    skip message with its numbers masked (a memory prediction differs per cell, its cause
    does not); ``message`` is the message of the group's smallest-M cell, ``messages`` the
    number of distinct messages. Skips carry no recommendation: the rule that skipped them
    already is one.
    """
    return _mine(cells, "skipped", models or {})


def reason_key(message) -> str:
    """A skip or error message with its numbers masked, so that per-cell sizes group."""
    return _NUMBER.sub("#", str(message)) if present(message) else "-"


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def _mine(cells: pd.DataFrame, status: str, models: dict) -> list[dict]:
    if cells.empty:
        return []
    f = cells.assign(
        layer=cells["layer"].fillna(""),
        model=cells["model"].fillna(""),
        sparsity=cells["sparsity"].fillna("dense"),
    )
    f = f[f["layer"] != "total"]
    hit = f[f["status"] == status]
    if status == "skipped":
        hit = hit.assign(_group=[reason_key(m) for m in hit["error_message"]])
    else:
        hit = hit.assign(_group=hit["error_class"])
    out = []
    for (task, key), sub in hit.groupby(["task", "_group"], dropna=False, sort=True):
        context = f[f["task"] == task]
        if status == "skipped":
            # One message ("no CUDA device") explains every cell: one group. A message that
            # varies per cell (a memory prediction) is stated per model, like "Qwen2.5-14B:
            # predicted memory ... exceeds ...".
            split = sub["error_message"].nunique() > 1
        else:
            split = not any(sub[d].nunique(dropna=False) == 1 for d in _SHARED)
        groups = [g for _, g in sub.groupby("model", sort=False)] if split else [sub]
        for group in groups:
            err = group["error_class"].iloc[0] if status == "skipped" else key
            out.append(_describe(group, context, task, err, status, models))
    return sorted(out, key=lambda g: (-g["n"], g["task"], str(g["factors"])))


def _describe(group: pd.DataFrame, context: pd.DataFrame, task, err, status, models) -> dict:
    factors = {d: group[d].iloc[0] for d in _DIMS if group[d].nunique(dropna=False) == 1}
    factors = {d: v for d, v in factors.items() if present(v)}
    if not str(task).startswith("kernel"):
        factors.pop("mode", None)  # an end-to-end task implies its mode
    if task == "kernel-quant":
        factors.pop("mode", None)  # always "quant"
    if factors.get("sparsity") == "dense" and "backend" in factors:
        factors.pop("sparsity")
    sel = context
    for d, v in factors.items():
        sel = sel[sel[d] == v]
    if status == "skipped":  # a value every cell of the task has does not explain a skip
        factors = {d: v for d, v in factors.items() if context[d].nunique() > 1}
    every, values = [], {}
    for d in ("backend", "sparsity", "dtype", "M", "model", "layer"):
        seen = {v for v in group[d] if present(v)}
        if d in factors or len(seen) <= 1:
            continue
        if seen >= {v for v in sel[d] if present(v)}:
            every.append(d)
        else:
            values[d] = sorted(seen, key=_sort_key)
    hit = sel["status"] == status
    m_from = None
    ms = group["M"].dropna()
    if "M" not in factors and "M" not in every and len(ms) and sel["M"].notna().all():
        m0 = int(ms.min())
        if ((sel["M"] >= m0) == hit).all():
            m_from = m0
            values.pop("M", None)
    exclusive = bool(len(sel) == len(group))
    messages = group["error_message"].dropna()
    if status == "skipped" and len(messages):  # the smallest cell's prediction: the floor
        message = group.sort_values("M", na_position="last")["error_message"].dropna().iloc[0]
    else:
        message = messages.mode().iloc[0] if len(messages) else None
    result = {
        "task": task,
        "status": status,
        "error_class": err if present(err) else "error",
        "n": len(group),
        "message": message,
        "messages": int(messages.nunique()),
        "factors": [[d, _fmt(v)] for d, v in factors.items()],
        "every": every,
        "values": {d: [_fmt(v) for v in vs] for d, vs in values.items()},
        "m_from": m_from,
        "exclusive": exclusive,
        "hints": [],
        "recommendation": None,
    }
    if status == "failed":
        _recommend(result, group, context, factors, models)
    elif result["messages"] <= 1:  # one reason for all: which sizes or patterns add nothing
        result.update(every=[], values={}, m_from=None)
    return result


def _recommend(result: dict, group, context, factors: dict, models: dict) -> None:
    model = factors.get("model")
    ok_same_model = context[(context["model"] == model) & (context["status"] == "ok")]
    if model and ok_same_model.empty:
        result["recommendation"] = {"kind": "skip_model", "model": model}
        weight = _linear_bytes(model, factors.get("dtype"), models)
        if weight:
            result["hints"].append({"kind": "weights", "model": model, "bytes": weight})
    elif model and group["M"].notna().any():
        first_bad = int(group["M"].min())
        passed = ok_same_model[ok_same_model["M"] < first_bad]["M"]
        if len(passed):
            result["recommendation"] = {
                "kind": "cap_m",
                "model": model,
                "max_m": int(passed.max()),
                "first_bad": first_bad,
            }
        hint = _overflow_hint(model, first_bad, models)
        if hint:
            result["hints"].append(hint)
    elif "backend" in factors and ("dtype" in factors or "sparsity" in factors):
        result["recommendation"] = {
            "kind": "avoid_variant",
            "variant": variant(factors["backend"], factors.get("sparsity", "dense")),
            "dtype": factors.get("dtype"),
            "mode": factors.get("mode"),
        }


def _sort_key(v):
    return (0, v, "") if isinstance(v, int | np.integer) else (1, 0, str(v))


def _fmt(v):
    return int(v) if isinstance(v, int | np.integer) else v


def _spec(model: str, models: dict):
    if model in models:
        return models[model]
    try:
        from slidesparse.core.models import get_model

        return get_model(model)
    except Exception:  # unknown model name in old data: no shape-derived hints
        return None


def _overflow_hint(model: str, m: int, models: dict) -> dict | None:
    spec = _spec(model, models)
    if spec is None:
        return None
    layer, (n, k) = max(spec.layers.items(), key=lambda kv: max(kv[1]))
    elems = m * max(n, k)
    if elems <= INT32_MAX:
        return None
    return {
        "kind": "int32",
        "model": model,
        "M": m,
        "layer": layer,
        "dim": max(n, k),
        "elems": elems,
    }


def _linear_bytes(model: str, dtype: str | None, models: dict) -> int | None:
    spec = _spec(model, models)
    params = getattr(spec, "linear_params", None)
    if not params:
        return None
    width = {"fp16": 2, "bf16": 2, "int8": 1, "fp8": 1, "fp4": 0.5}.get(dtype or "int8", 1)
    return int(params * width)
