"""The per-GPU end-to-end report's context: speedup tables per stack, and how much of the
kernel-level gain survives end to end.

Two stacks can hold e2e rows (:data:`slidesparse.report.speedups.STACKS`): slidesparse's
engine (backend ``engine``: dense W8A8, SlideSparse 2_L and a bf16 reference) and vLLM
(rows imported from the original scripts, or vLLM's own dense path run where installed).
Speedups never cross stacks.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from slidesparse.report import frames, speedups
from slidesparse.report.render import _num, _speedup, _tok
from slidesparse.report.sections import _panels, _plot, _speedup_table

_EKEY = ["gpu_tag", "task", "model", "dtype", "M"]


def e2e_context(
    cells: pd.DataFrame,
    out: Path,
    stem: str,
    plots: bool,
    cpu: bool,
    kernel_cells: pd.DataFrame | None = None,
) -> dict:
    """Context of ``e2e.<lang>.md.j2`` for one GPU's end-to-end cells (``kernel_cells``: the
    same GPU's kernel cells, for the end-to-end vs kernel section)."""
    sp = speedups.e2e_speedups(cells)
    sections = []
    for (task, dtype, stack), f in sp.groupby(["task", "dtype", "stack"], sort=True):
        models = []
        for model in frames.order_models(f["model"]):
            g = f[f["model"] == model]
            table = _speedup_table(g, ["M"], "dense_tokens_per_s", _tok)
            ref = g.dropna(subset=["speedup_vs_ref"])
            vs_ref = None
            if len(ref):
                vs_ref = _speedup_table(
                    ref.assign(speedup=ref["speedup_vs_ref"], suspect=False),
                    ["M"],
                    "ref_tokens_per_s",
                    _tok,
                )
                if stack == "engine":  # L/(L-2) bounds sparse over dense, not over bf16
                    vs_ref["ideal"] = vs_ref["ideal"][:2] + ["-"] * len(vs_ref["patterns"])
            models.append({"model": model, "table": table, "vs_ref": vs_ref})
        fig = None
        if plots:
            panels = _panels([(m["model"], f[f["model"] == m["model"]]) for m in models])
            tail = "" if stack == "vllm" else f".{stack}"
            fig = f"{stem}.{task.removeprefix('e2e-')}.{dtype}{tail}.png"
            label = "" if stack == "vllm" else " (slidesparse engine)"
            _plot(panels, out / fig, f"{stem} {task} {dtype}{label}", cpu)
        sections.append(
            {
                "task": task,
                "dtype": dtype,
                "stack": stack,
                "engine": _engine_names(cells, task, dtype) if stack == "engine" else [],
                "models": models,
                "figure": fig,
            }
        )
    conclusions = []
    for (task, dtype, stack), f in sp[~sp["suspect"].astype(bool)].groupby(
        ["task", "dtype", "stack"]
    ):
        best = {r.sparsity: r for r in f.sort_values("speedup").itertuples()}  # last = best
        items = [
            f"{p} {_num(best[p].speedup)}× ({best[p].model}, M={best[p].M})"
            for p in frames.order_patterns(best)
        ]
        conclusions.append({"task": task, "dtype": dtype, "stack": stack, "items": items})
    return {
        "sections": sections,
        "suspect": int(sp["suspect"].sum()),
        "conclusions": conclusions,
        "survival": survival(sp, cells, kernel_cells),
        "accuracy": accuracy(cells),
    }


def _engine_names(cells: pd.DataFrame, task: str, dtype: str) -> list[str]:
    """The engine versions and linear paths behind a section, as recorded in its rows."""
    f = cells[(cells["task"] == task) & (cells["backend"] == "engine") & (cells["status"] == "ok")]
    f = f[f["dtype"].isin([dtype, "bf16"])]
    return sorted(set(f["kernel"].dropna()))


def _extra(cells: pd.DataFrame, key: str) -> pd.Series:
    """The numeric ``extra[key]`` of every row (NaN where absent)."""

    def get(text):
        v = speedups.extra_dict(text).get(key)
        return float(v) if isinstance(v, int | float) else math.nan

    return cells["extra"].map(get) if "extra" in cells else pd.Series(math.nan, cells.index)


def survival(
    sp: pd.DataFrame, cells: pd.DataFrame, kernel_cells: pd.DataFrame | None
) -> list[dict]:
    """Per (task, dtype, model) of the engine stack: each sparse cell's end-to-end speedup
    beside the kernel-level model-total speedup at the same M (from the kernel matrix where
    it ran, and from the engine's own GEMMs timed alone in the same cells), the linear
    layers' share of the dense step, and what Amdahl's law expects from those two:
    1 / ((1 - share) + share / kernel)."""
    e = sp[(sp["stack"] == "engine") & ~sp["suspect"].astype(bool)]
    if e.empty:
        return []
    ok = cells[(cells["backend"] == "engine") & (cells["status"] == "ok")]
    ok = ok.assign(gemm_s=_extra(ok, "kernel_gemm_s"), share=_extra(ok, "linear_share"))
    dense = ok[ok["sparsity"] == "dense"][[*_EKEY, "gemm_s", "share"]].rename(
        columns={"gemm_s": "dense_gemm_s"}
    )
    sparse = ok[ok["sparsity"] != "dense"][[*_EKEY, "sparsity", "gemm_s"]]
    f = e.merge(dense.drop_duplicates(_EKEY), on=_EKEY, how="left").merge(
        sparse.drop_duplicates([*_EKEY, "sparsity"]), on=[*_EKEY, "sparsity"], how="left"
    )
    f["engine_kernel"] = f["dense_gemm_s"] / f["gemm_s"]
    f["matrix_kernel"] = math.nan
    if kernel_cells is not None and not kernel_cells.empty:
        totals = speedups.model_totals(speedups.kernel_speedups(kernel_cells))
        totals = totals[~totals["suspect"].astype(bool)]
        key = ["gpu_tag", "model", "dtype", "M", "sparsity"]
        t = totals[[*key, "speedup"]].rename(columns={"speedup": "matrix_kernel"})
        f = f.drop(columns="matrix_kernel").merge(t.drop_duplicates(key), on=key, how="left")
    kernel = f["matrix_kernel"].fillna(f["engine_kernel"])
    f["amdahl"] = 1 / ((1 - f["share"]) + f["share"] / kernel)
    f["kept"] = f["speedup"] / kernel
    groups = []
    for (task, dtype), g in f.groupby(["task", "dtype"], sort=True):
        rows = []
        for model in frames.order_models(g["model"]):
            h = g[g["model"] == model].sort_values(["M", "sparsity"])
            for p in frames.order_patterns(h["sparsity"]):
                for r in h[h["sparsity"] == p].itertuples():
                    rows.append(
                        [
                            model,
                            str(r.M),
                            p,
                            _speedup(r.speedup, False),
                            _speedup(r.matrix_kernel, False),
                            _speedup(r.engine_kernel, False),
                            _pct(r.kept),
                            _pct(r.share),
                            _speedup(r.amdahl, False),
                        ]
                    )
        groups.append({"task": task, "dtype": dtype, "rows": rows})
    return groups


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0%}"


def accuracy(cells: pd.DataFrame) -> list[dict]:
    """Per (model, dtype, text, window): perplexity per pattern, its ratio to dense, and the
    slid engine's agreement with the pruned one; plus the paper's claim (6:8 keeps far more
    quality than 2:4) checked where both patterns ran."""
    ok = cells[(cells["task"] == "accuracy") & (cells["status"] == "ok")]
    if ok.empty:
        return []
    recs = []
    for r in ok.itertuples():
        x = speedups.extra_dict(r.extra)
        if isinstance(x.get("perplexity"), int | float):
            recs.append((r, x))
    groups: dict[tuple, list] = {}
    for r, x in recs:
        key = (r.model, r.dtype, x.get("text", "?"), x.get("window"))
        groups.setdefault(key, []).append((r, x))
    out = []
    for (model, dtype, text, window), items in sorted(groups.items(), key=str):
        by_p = {r.sparsity: x for r, x in items}
        base = by_p.get("dense", {}).get("perplexity")
        rows, ratio = [], {}
        for p in frames.order_patterns(by_p):
            x = by_p[p]
            ratio[p] = x["perplexity"] / base if base else math.nan
            agree = x.get("greedy_agree")
            rows.append(
                [
                    p,
                    f"{x['perplexity']:.3f}",
                    _num(ratio[p], 3),
                    "-" if x.get("max_abs_dlogit") is None else f"{x['max_abs_dlogit']:.3g}",
                    "-" if agree is None else f"{agree:.0%} ({x.get('greedy_tokens')})",
                ]
            )
        claim = None
        if "2_4" in ratio and "2_8" in ratio and base:
            claim = {"r24": _num(ratio["2_4"], 3), "r28": _num(ratio["2_8"], 3)}
            claim["holds"] = bool(ratio["2_8"] < ratio["2_4"])
        out.append(
            {
                "model": model,
                "dtype": dtype,
                "text": text,
                "window": window,
                "tokens": int(items[0][0].M) if items[0][0].M is not None else None,
                "rows": rows,
                "claim": claim,
            }
        )
    return out
