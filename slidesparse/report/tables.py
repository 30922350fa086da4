"""Derived numbers for the reports: speedups, efficiencies, pass tables, failure patterns.

Pure pandas over store frames (:meth:`slidesparse.results.store.Store.read`). The rules, stated once:

* Cells: rows equal on :data:`slidesparse.results.store.KEY_COLUMNS` describe one cell; the latest ok
  row wins, else the latest row (older rows stay in the store as history).
* Kernel speedup: for one (GPU, mode, model, layer, dtype, M) the dense baseline is the
  fastest ok ``dense`` row, whatever its backend; each pattern's latency is its fastest ok
  row; speedup = dense latency / pattern latency. A model total sums the four layers at the
  same M, only where all four exist on both sides.
* End-to-end speedup: sparse tokens/s over the cuBLASLt dense tokens/s of the same (GPU,
  stage, model, dtype, M); also over vLLM's CUTLASS path where that was measured.
* A speedup above the ideal bound L/(L-2) by more than 3% marks the baseline as suspect: it
  is shown, flagged, never as a result.
* Eff_L = (S_L / S_2_4) / (0.5 · L/(L-2)) (SLIDESPARSE.md §5).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime

import numpy as np
import pandas as pd

from slidesparse.core import metrics
from slidesparse.core.models import LAYERS
from slidesparse.kernels.bench import KERNELS
from slidesparse.results.store import KEY_COLUMNS as _KEY

INT32_MAX = 2**31 - 1
_INT_COLS = ("M", "N", "K", "K_slide", "alg_id", "split_k", "workspace_bytes", "n_samples")
_DENSE_ORDER = metrics.DENSE_PREFERENCE


def _sparse_order() -> tuple[str, ...]:
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
    """Models in the SLIDESPARSE.md order (smallest first), unknown ones after, sorted."""
    try:
        from slidesparse.core.models import MODELS

        known = list(MODELS)
    except ImportError:  # models.py not installed in a stripped tree
        known = []
    models = [m for m in dict.fromkeys(models) if m is not None]
    return [m for m in known if m in models] + sorted(m for m in models if m not in known)


def order_patterns(patterns: Iterable[str]) -> list[str]:
    """Patterns in L order (2_4 ... 2_16, 2_inf)."""
    rank = {p: i for i, p in enumerate(_sparse_order())}
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
    rank = {p: i for i, p in enumerate(_sparse_order())}

    def key(label: str):
        backend, _, pattern = label.partition(" ")
        if not pattern:
            dense = _DENSE_ORDER.index(backend) if backend in _DENSE_ORDER else 50
            return (0, dense, backend, 0)
        return (1, 0, backend, rank.get(pattern, 99))

    return sorted(set(labels), key=key)


# ------------------------------------------------------------------------ kernel speedups

_KGROUP = ["gpu_tag", "mode", "model", "layer", "dtype", "M", "N", "K"]


def _fastest(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    f = frame.sort_values("latency_us", kind="stable")
    return f.groupby(by, dropna=False, sort=False).head(1)


def kernel_speedups(cells: pd.DataFrame) -> pd.DataFrame:
    """Per-layer (or square) kernel speedups over the strongest dense baseline.

    Columns: gpu_tag, mode, model, layer, dtype, M, N, K, sparsity, dense_latency_us,
    dense_backend, latency_us, backend, speedup, ideal, suspect.
    """
    cols = [*_KGROUP, "sparsity", "dense_latency_us", "dense_backend", "latency_us"]
    cols += ["backend", "speedup", "ideal", "suspect"]
    if cells.empty:
        return pd.DataFrame(columns=cols)
    ok = cells[(cells["task"] == "kernel-gemm") & (cells["status"] == "ok")]
    ok = ok[ok["latency_us"].notna() & (ok["layer"].fillna("") != "total")]
    ok = ok.assign(model=ok["model"].fillna(""), layer=ok["layer"].fillna(""))
    dense = _fastest(ok[ok["sparsity"] == "dense"], _KGROUP)
    dense = dense[[*_KGROUP, "latency_us", "backend"]].rename(
        columns={"latency_us": "dense_latency_us", "backend": "dense_backend"}
    )
    sparse = _fastest(ok[ok["sparsity"] != "dense"], [*_KGROUP, "sparsity"])
    sparse = sparse[[*_KGROUP, "sparsity", "latency_us", "backend"]]
    out = dense.merge(sparse, on=_KGROUP, how="inner")
    return _with_speedup(out, out["dense_latency_us"] / out["latency_us"])[cols]


def _with_speedup(frame: pd.DataFrame, speedup: pd.Series) -> pd.DataFrame:
    frame = frame.assign(speedup=speedup.astype(float))
    frame["ideal"] = [metrics.ideal(p) for p in frame["sparsity"]]
    suspect = [metrics.is_suspect(s, p) for s, p in zip(frame["speedup"], frame["sparsity"])]
    frame["suspect"] = pd.Series(suspect, index=frame.index, dtype=bool)
    return frame.reset_index(drop=True)


def model_totals(speedups: pd.DataFrame) -> pd.DataFrame:
    """Model-total speedups: the four layer latencies summed at the same M, both sides."""
    group = ["gpu_tag", "model", "dtype", "M", "sparsity"]
    cols = [*group, "dense_latency_us", "latency_us", "speedup", "ideal", "suspect"]
    model = speedups[speedups["mode"] == "model"]
    if model.empty:
        return pd.DataFrame(columns=cols)
    agg = model.groupby(group, sort=False).agg(
        dense_latency_us=("dense_latency_us", "sum"),
        latency_us=("latency_us", "sum"),
        layers=("layer", lambda s: frozenset(s)),
    )
    agg = agg[agg["layers"].map(lambda s: s >= set(LAYERS))].reset_index()
    return _with_speedup(agg, agg["dense_latency_us"] / agg["latency_us"])[cols]


def efficiencies(speedups: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Eff_L = (S_L / S_2_4) / (0.5 · L/(L-2)) for every row that has a 2_4 partner on ``by``."""
    base = speedups[speedups["sparsity"] == "2_4"][[*by, "speedup"]]
    merged = speedups.merge(base.rename(columns={"speedup": "s24"}), on=by, how="inner")
    merged["efficiency"] = [
        metrics.efficiency_vs_2_4(s, s24, p)
        for s, s24, p in zip(merged["speedup"], merged["s24"], merged["sparsity"], strict=True)
    ]
    return merged.drop(columns=["s24"])


# ------------------------------------------------------------------------ quant kernels

_QUANT_EXTRA = ("copy_gbps", "pct_of_copy", "ratio_vs_quant_only", "ideal_ratio")


def _extra(text) -> dict:
    if isinstance(text, dict):
        return text
    if not present(text):
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError):  # a hand-edited or truncated extra: no derived numbers
        return {}
    return value if isinstance(value, dict) else {}


def quant_rows(cells: pd.DataFrame) -> pd.DataFrame:
    """The ok kernel-quant cells, one row each, with their ``extra`` figures as columns.

    Columns: gpu_tag, kernel, sparsity, dtype, out_dtype, M, size_name ("K", or "N" for
    dequant_bias), size, latency_us, latency_p25_us, latency_p75_us, gbps, copy_gbps,
    pct_of_copy, ratio_vs_quant_only, ideal_ratio, interpreter, timer. Rows timed in Triton's
    CPU interpreter (``interpreter``) keep their latency but no bandwidth figure: their time
    says the kernel runs, not how fast. ``pct_of_copy`` is taken from the row, else derived
    from gbps and the copy bandwidth measured in the same worker. Sorted by kernel, pattern,
    M and size.
    """
    cols = ["gpu_tag", "kernel", "sparsity", "dtype", "out_dtype", "M", "size_name", "size"]
    cols += ["latency_us", "latency_p25_us", "latency_p75_us", "gbps", *_QUANT_EXTRA]
    cols += ["interpreter", "timer"]
    if cells.empty:
        return pd.DataFrame(columns=cols)
    f = cells[(cells["task"] == "kernel-quant") & (cells["status"] == "ok")]
    f = f[f["latency_us"].notna() & f["kernel"].notna()]
    if f.empty:
        return pd.DataFrame(columns=cols)
    extra = [_extra(e) for e in (f["extra"] if "extra" in f else [None] * len(f))]
    timer = f["timer"] if "timer" in f else pd.Series([None] * len(f), index=f.index)
    dequant = (f["kernel"] == "dequant_bias").to_numpy()
    out = pd.DataFrame(
        {
            "gpu_tag": f["gpu_tag"].to_numpy(),
            "kernel": f["kernel"].to_numpy(),
            "sparsity": f["sparsity"].fillna("dense").to_numpy(),
            "dtype": f["dtype"].fillna("-").to_numpy(),
            "out_dtype": f["out_dtype"].fillna("-").to_numpy(),
            "M": f["M"].to_numpy(),
            "size_name": np.where(dequant, "N", "K"),
            "size": pd.array(f["N"].where(dequant, f["K"]).to_numpy(), dtype="Int64"),
            "timer": timer.to_numpy(),
        }
    )
    for c in ("latency_us", "latency_p25_us", "latency_p75_us", "gbps"):
        out[c] = f[c].astype(float).to_numpy() if c in f else np.nan
    for c in _QUANT_EXTRA:
        out[c] = [_float(e.get(c)) for e in extra]
    out["interpreter"] = [
        bool(e.get("interpreter")) or "interpreter" in str(t)
        for e, t in zip(extra, timer, strict=True)
    ]
    derived = 100.0 * out["gbps"] / out["copy_gbps"]
    out["pct_of_copy"] = out["pct_of_copy"].fillna(derived)
    bandwidth = ["gbps", "copy_gbps", "pct_of_copy", "ratio_vs_quant_only"]
    out.loc[out["interpreter"], bandwidth] = np.nan
    rank = {p: i for i, p in enumerate(("dense", *_sparse_order()))}
    out["_k"] = out["kernel"].map(lambda k: KERNELS.index(k) if k in KERNELS else 9)
    out["_p"] = out["sparsity"].map(lambda p: rank.get(p, 99))
    out = out.sort_values(["dtype", "out_dtype", "_k", "kernel", "_p", "M", "size"], kind="stable")
    return out[cols].reset_index(drop=True)


def quant_findings(rows: pd.DataFrame) -> list[dict]:
    """Per (input, output dtype), at the largest M timed on a GPU: the row furthest below the
    copy bandwidth, and per quant_slide pattern the ratio to quant_only furthest above its
    ideal bytes ratio. Interpreter rows (no GPU figures) take no part.

    Each item: dtype, out_dtype, M, low_pct (lowest ``pct_of_copy``, None if none), low_at
    (its kernel label and size, e.g. "quant_slide 2_8, K=3584") and ratios (one dict per
    pattern: sparsity, ratio, ideal, at).
    """
    out = []
    gpu = rows[~rows["interpreter"].astype(bool)] if len(rows) else rows
    for (dtype, out_dtype), f in gpu.groupby(["dtype", "out_dtype"], sort=True):
        f = f[f["M"] == f["M"].max()]
        at = [
            f"{variant(k, p)}, {n}={z}"
            for k, p, n, z in zip(
                f["kernel"], f["sparsity"], f["size_name"], f["size"], strict=True
            )
        ]
        f = f.assign(_at=at, _over=f["ratio_vs_quant_only"] / f["ideal_ratio"])
        pct = f.dropna(subset=["pct_of_copy"]).sort_values("pct_of_copy", kind="stable")
        slide = f[(f["kernel"] == "quant_slide") & f["_over"].notna()]
        worst = slide.sort_values("_over", ascending=False, kind="stable")
        worst = worst.groupby("sparsity", sort=False).head(1).set_index("sparsity")
        ratios = [
            {
                "sparsity": p,
                "ratio": worst.loc[p, "ratio_vs_quant_only"],
                "ideal": worst.loc[p, "ideal_ratio"],
                "at": f"{worst.loc[p, 'size_name']}={worst.loc[p, 'size']}",
            }
            for p in order_patterns(worst.index)
        ]
        if pct.empty and not ratios:
            continue
        item = {"dtype": dtype, "out_dtype": out_dtype, "M": int(f["M"].iloc[0])}
        low = pct.iloc[0] if len(pct) else None
        item["low_pct"] = None if low is None else float(low["pct_of_copy"])
        item["low_at"] = None if low is None else low["_at"]
        out.append({**item, "ratios": ratios})
    return out


def _float(v) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else np.nan


# ------------------------------------------------------------------------ end to end

_EGROUP = ["gpu_tag", "task", "mode", "model", "dtype", "M"]


def e2e_speedups(cells: pd.DataFrame) -> pd.DataFrame:
    """End-to-end speedups: sparse tokens/s over cuBLASLt (and CUTLASS) dense tokens/s."""
    cols = [*_EGROUP, "sparsity", "dense_tokens_per_s", "tokens_per_s", "speedup"]
    cols += ["cutlass_tokens_per_s", "speedup_vs_cutlass", "ideal", "suspect"]
    if cells.empty:
        return pd.DataFrame(columns=cols)
    ok = cells[cells["task"].isin(["e2e-prefill", "e2e-decode"]) & (cells["status"] == "ok")]
    ok = ok[ok["tokens_per_s"].notna()]

    def best(backend: str, name: str) -> pd.DataFrame:
        f = ok[(ok["backend"] == backend) & (ok["sparsity"] == "dense")]
        f = f.sort_values("tokens_per_s", ascending=False, kind="stable")
        return (
            f.groupby(_EGROUP, sort=False)
            .head(1)[[*_EGROUP, "tokens_per_s"]]
            .rename(columns={"tokens_per_s": name})
        )

    sparse = ok[ok["sparsity"] != "dense"].sort_values("tokens_per_s", ascending=False)
    sparse = sparse.groupby([*_EGROUP, "sparsity"], sort=False).head(1)
    out = best("cublaslt", "dense_tokens_per_s").merge(
        sparse[[*_EGROUP, "sparsity", "tokens_per_s"]], on=_EGROUP, how="inner"
    )
    out = out.merge(best("cutlass", "cutlass_tokens_per_s"), on=_EGROUP, how="left")
    out["speedup_vs_cutlass"] = out["tokens_per_s"] / out["cutlass_tokens_per_s"]
    return _with_speedup(out, out["tokens_per_s"] / out["dense_tokens_per_s"])[cols]


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
