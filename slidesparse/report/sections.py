"""Report contexts: the per-GPU kernel and end-to-end sections and the cross-GPU tables.

Each builder turns resolved cells (:mod:`slidesparse.report.frames`) into a context of
formatted numbers for :func:`slidesparse.report.render.render`; figures come from
:mod:`slidesparse.report.plots`. Every number is the store's.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from slidesparse.core import metrics
from slidesparse.report import failures, frames, speedups
from slidesparse.report.render import (
    _E2E,
    _MAX_LISTED,
    _MAX_REASONS,
    _date,
    _duration,
    _model_label,
    _num,
    _pass_cell,
    _speedup,
    _text,
    _tok,
)
from slidesparse.results.store import Store

# ---------------------------------------------------------------------- shared sections


def header(store: Store, tag: str, frame: pd.DataFrame) -> dict:
    machine = store.read_machine(tag) or {}
    cc = machine.get("cc")
    first, last = frames.recorded_times(frame)
    total = frame["duration_s"].sum(min_count=1) if len(frame) else None
    sources = sorted(set(frame["source"].dropna())) if len(frame) else []
    # hardware.py tags a machine without a CUDA device CPU_cc0_...; a legacy or hand-made
    # record may lack the gpu fields without being a CPU run
    cpu = tag.startswith("CPU_") or (cc is None and machine.get("gpu_count") == 0)
    return {
        "tag": tag,
        "cpu": cpu,
        "gpu": machine.get("gpu_name") or tag.split("_")[0],
        "cc": f"{cc[0]}.{cc[1]}" if isinstance(cc, list | tuple) and len(cc) == 2 else "-",
        "cuda": machine.get("cuda_runtime") or "-",
        "driver": machine.get("driver") or "-",
        "python": machine.get("python") or "-",
        "torch": machine.get("torch") or "-",
        "arch": machine.get("arch") or "-",
        "memory": _num(machine["memory_bytes"] / 2**30, 1) + " GiB"
        if machine.get("memory_bytes")
        else "-",
        "first": _date(first),
        "last": _date(last),
        "total_time": _duration(total),
        "sources": ", ".join(sources) or "-",
        "rows": len(frame),
    }


def summary(cells: pd.DataFrame, by: list[str]) -> list[dict]:
    out = []
    cells = cells.assign(**{c: cells[c].map(_text) for c in by})  # one "-" for every null
    for key, sub in cells.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        if key[0] == "kernel-quant":  # named by kernel (in backend); its mode says nothing
            key = key[:2]
        n = {s: int((sub["status"] == s).sum()) for s in ("ok", "failed", "skipped")}
        if n["skipped"] == len(sub):
            icon = "⏭️"
        elif n["failed"] == 0:  # skipped cells were never measured: they fail nothing
            icon = "✅"
        elif n["ok"] == 0:
            icon = "❌"
        else:
            icon = "⚠️"
        name = " · ".join(k for k in key if k != "-")
        groups = failures.failure_groups(sub)[:2]
        out.append({"name": name, "icon": icon, **n, "failures": groups, **_skips(sub)})
    return out


def _skips(cells: pd.DataFrame) -> dict:
    """The skip reasons of some cells, condensed: most frequent first, numbers masked."""
    skipped = cells[cells["status"] == "skipped"]
    if skipped.empty:
        return {"skips": [], "more_skips": 0}
    skipped = skipped.sort_values("M", na_position="last", kind="stable")
    keys = [failures.reason_key(m) for m in skipped["error_message"]]
    groups = skipped.groupby(keys, sort=False)["error_message"]
    reasons = sorted(
        (
            (_text(g.dropna().iloc[0]) if g.notna().any() else "@no_reason", len(g))
            for _, g in groups
        ),
        key=lambda r: -r[1],
    )
    listed = [{"reason": r, "n": n} for r, n in reasons[:_MAX_REASONS]]
    return {"skips": listed, "more_skips": sum(n for _, n in reasons[_MAX_REASONS:])}


def failure_details(cells: pd.DataFrame, groups: list[dict]) -> list[dict]:
    failed = cells[cells["status"] == "failed"].copy()
    failed["variant"] = [
        frames.variant(b, s) for b, s in zip(failed["backend"], failed["sparsity"], strict=True)
    ]
    failed["error_class"] = failed["error_class"].where(failed["error_class"].notna(), "error")
    out = []
    for g in groups:
        sel = failed[(failed["task"] == g["task"]) & (failed["error_class"] == g["error_class"])]
        for d, v in g["factors"]:
            sel = sel[sel[d].fillna("") == v]
        rank = {v: i for i, v in enumerate(frames.order_variants(sel["variant"]))}
        sel = sel.assign(_rank=sel["variant"].map(rank))
        sel = sel.sort_values(["model", "dtype", "M", "_rank"], na_position="first")
        listed = [
            [
                str(i + 1),
                _model_label(r.model, r.mode),
                _text(r.dtype),
                _text(r.M),
                r.variant,
                _text(r.layer),
                _text(r.error_class),
                _text(r.error_message),
            ]
            for i, r in enumerate(sel.head(_MAX_LISTED).itertuples())
        ]
        out.append({**g, "cells": listed, "more": max(0, len(sel) - _MAX_LISTED)})
    return out


def file_stats(store: Store, tag: str, frame: pd.DataFrame) -> dict:
    status = frame["status"].value_counts() if len(frame) else {}
    return {
        "parts": len(store.part_files(tag)),
        "rows": len(frame),
        "runs": int(frame["run_id"].nunique()) if len(frame) else 0,
        "ok": int(status.get("ok", 0)),
        "failed": int(status.get("failed", 0)),
        "skipped": int(status.get("skipped", 0)),
        "by_source": [
            [s, str(n)]
            for s, n in frame["source"].fillna("@not_recorded").value_counts().sort_index().items()
        ]
        if len(frame)
        else [],
    }


def task_times_table(frame: pd.DataFrame) -> list[list[str]]:
    return [
        [r.task, str(r.rows), _duration(r.duration_s)]
        for r in frames.task_times(frame).itertuples()
    ]


def pass_tables(cells: pd.DataFrame, tasks) -> list[dict]:
    """Per (task, dtype): successful / measured cells per variant and model (kernel-quant:
    per output dtype); skipped cells are counted apart."""
    counts = failures.pass_counts(cells, tasks)
    tables = []
    for (task, dtype), sub in counts.groupby(["task", "dtype"], sort=True):
        quant = task == "kernel-quant"
        if quant:
            columns = sorted(set(sub["column"]))
            names = [f"@out:{c.upper()}" if c else "-" for c in columns]
        else:
            columns = frames.order_models(m for m in sub["column"] if m)
            columns += [""] if "" in set(sub["column"]) else []
            mode = "square" if "square" in set(sub["mode"]) else None
            names = [_model_label(c, mode) for c in columns]
        rows = []
        for label in frames.order_variants(sub["variant"]):
            line = sub[sub["variant"] == label]
            by_col = line.groupby("column")[["ok", "measured", "skipped"]].sum()
            cellmap = {c: tuple(int(x) for x in r) for c, r in by_col.iterrows()}
            rows.append(
                [
                    label,
                    *[_pass_cell(*cellmap[c]) if c in cellmap else "-" for c in columns],
                    _pass_cell(*_sums(line), icon=False),
                ]
            )
        col_tot = [_pass_cell(*_sums(sub[sub["column"] == c]), icon=False) for c in columns]
        rows.append(["@total", *col_tot, _pass_cell(*_sums(sub), icon=False)])
        tables.append(
            {
                "task": task,
                "dtype": dtype,
                "columns": ["@kernel" if quant else "@backend", *names, "@total"],
                "rows": rows,
                "skipped": int(sub["skipped"].sum()),
            }
        )
    return tables


def _sums(f: pd.DataFrame) -> tuple[int, int, int]:
    return int(f["ok"].sum()), int(f["measured"].sum()), int(f["skipped"].sum())


# ---------------------------------------------------------------------- kernel report


def _speedup_table(
    frame: pd.DataFrame, keys: list[str], lat_col: str, lat_fmt, intervals: bool = True
) -> dict | None:
    """Rows = ``keys`` values (sorted), then the baseline column, then one column per pattern
    (with the speedups' intervals where the frame has them and ``intervals`` is set)."""
    if frame.empty:
        return None
    patterns = frames.order_patterns(frame["sparsity"])

    def cell(r) -> str:
        bounds = (getattr(r, "speedup_lo", None), getattr(r, "speedup_hi", None))
        return _speedup(r.speedup, r.suspect, *(bounds if intervals else ()))

    rows = []
    for key, sub in frame.groupby(keys, sort=True):
        by_p = {r.sparsity: r for r in sub.itertuples()}
        rows.append(
            [str(k) for k in key]
            + [lat_fmt(sub[lat_col].iloc[0])]
            + [cell(by_p[p]) if p in by_p else "-" for p in patterns]
        )
    ideal = [_num(metrics.ideal(p)) for p in patterns]
    return {"patterns": patterns, "ideal": ["@ideal"] + [""] * len(keys) + ideal, "rows": rows}


def _eff_table(eff: pd.DataFrame, keys: list[str], lat_col: str, lat_fmt) -> dict | None:
    table = _speedup_table(eff, keys, lat_col, lat_fmt, intervals=False)
    if table:  # the bound of Eff_L is 1.00 for every pattern
        table["ideal"] = ["@eff_ideal"] + [""] * len(keys) + ["1.00"] * len(table["patterns"])
    return table


def _backend_table(wins: pd.DataFrame) -> list[list[str]]:
    """Rows of the backend comparison: side (dense / pattern), backend, fastest on, median
    latency over the best other backend."""
    sides = ["dense", *[p for p in frames.order_patterns(wins["side"]) if p != "dense"]]
    rows = []
    for side in sides:
        for r in wins[wins["side"] == side].sort_values("backend").itertuples():
            rows.append([side, r.backend, f"{r.won}/{r.of}", _num(r.vs_best)])
    return rows


def kernel_context(cells: pd.DataFrame, out: Path, stem: str, plots: bool, cpu: bool) -> dict:
    wins = speedups.backend_wins(cells)
    sp = speedups.kernel_speedups(cells)
    totals = speedups.model_totals(sp)
    sections, figures = [], []
    for dtype in sorted(set(sp["dtype"]) | set(totals["dtype"])):
        square = sp[(sp["mode"] == "square") & (sp["dtype"] == dtype)]
        # A matrix may give "square" cells an N = K axis of their own: key those rows by all
        # three sizes so that two shapes at one M never share a table row.
        true_square = ((square["M"] == square["N"]) & (square["N"] == square["K"])).all()
        sq_keys = ["M"] if true_square else ["M", "N", "K"]
        sq = _speedup_table(square, sq_keys, "dense_latency_us", _num)
        models = []
        t = totals[totals["dtype"] == dtype]
        for model in frames.order_models(t["model"]):
            table = _speedup_table(t[t["model"] == model], ["M"], "dense_latency_us", _num)
            models.append({"model": model, "table": table})
        fig = None
        if plots:
            panels = _panels(
                [("SQUARE", square)] + [(m["model"], t[t["model"] == m["model"]]) for m in models]
            )
            if panels:
                fig = f"{stem}.{dtype}.png"
                _plot(panels, out / fig, f"{stem} {dtype}", cpu)
                figures.append(fig)
        sq_cols = ["@M", *sq_keys[1:]]
        incomplete = [
            {**r, "M": ", ".join(map(str, r["M"])), "missing": ", ".join(r["missing"])}
            for r in speedups.incomplete_totals(sp[sp["dtype"] == dtype])
        ]
        sections.append(
            {
                "dtype": dtype,
                "backends": _backend_table(wins[wins["dtype"] == dtype]),
                "square": sq,
                "square_cols": sq_cols,
                "models": models,
                "incomplete": incomplete,
                "figure": fig,
            }
        )
    suspect = int(sp["suspect"].sum() + totals["suspect"].sum())
    return {
        "sections": sections,
        "suspect": suspect,
        **_interval_counts(sp, totals),
        "conclusions": _kernel_conclusions(sp, totals),
        "quant": _quant_context(cells),
    }


def _interval_counts(sp: pd.DataFrame, totals: pd.DataFrame) -> dict:
    """How many of the tables' kernel speedups (square GEMMs, model totals; suspect ones are
    shown without) carry an interval, and how many of those intervals hold 1.0."""
    shown = [f[~f["suspect"].astype(bool)] for f in (sp[sp["mode"] == "square"], totals)]
    return {
        "intervals": sum(int(f["speedup_lo"].notna().sum()) for f in shown),
        "noise": sum(int(f["noise"].astype(bool).sum()) for f in shown),
    }


def _panels(items) -> list[dict]:
    panels = []
    for title, f in items:
        if f.empty:
            continue
        series, suspect = {}, {}
        for p in frames.order_patterns(f["sparsity"]):
            g = f[f["sparsity"] == p].sort_values("M")
            points = [
                (int(m), float(s), bool(x))
                for m, s, x in zip(g["M"], g["speedup"], g["suspect"], strict=True)
                if not math.isnan(s)
            ]
            # Suspect values are drawn apart (a distinct marker), never as part of the line.
            series[p] = [(m, s) for m, s, x in points if not x]
            suspect[p] = [(m, s) for m, s, x in points if x]
        panels.append(
            {
                "title": title,
                "series": series,
                "suspect": suspect,
                "ideal": {p: metrics.ideal(p) for p in series},
            }
        )
    return panels


def _plot(panels, path: Path, title: str, cpu: bool) -> None:
    from slidesparse.report import plots

    # ``cpu`` is the header's verdict on the machine: its figures say they are CPU timings.
    plots.speedup_vs_m(panels, path, title, cpu=cpu)


def _kernel_conclusions(sp: pd.DataFrame, totals: pd.DataFrame) -> list[dict]:
    by_dtype = [("square", d, g) for d, g in sp[sp["mode"] == "square"].groupby("dtype")]
    by_dtype += [("model", d, g) for d, g in totals.groupby("dtype")]
    out = []
    for mode, dtype, f in by_dtype:
        m = int(f["M"].max())
        at = f[(f["M"] == m) & ~f["suspect"]].groupby("sparsity")["speedup"].median()
        items = [
            f"{p} {_num(at[p])}× ({_num(100 * at[p] / metrics.ideal(p), 0)}%)"
            for p in frames.order_patterns(at.index)
        ]
        models = int(f["model"].nunique()) if mode == "model" else 0
        out.append({"mode": mode, "dtype": dtype, "M": m, "items": items, "models": models})
    return out


def _quant_context(cells: pd.DataFrame) -> dict | None:
    """One table per (input -> output dtype) of the ok kernel-quant cells; None without any."""
    if not (cells["task"] == "kernel-quant").any():
        return None
    q = speedups.quant_rows(cells)
    tables = []
    for (dtype, out_dtype), f in q.groupby(["dtype", "out_dtype"], sort=True):
        slide = ["@vs_quant_only", "@ideal_bytes"] if (f["kernel"] == "quant_slide").any() else []
        size = " / ".join(sorted(set(f["size_name"])))
        rows = [
            [frames.variant(r.kernel, r.sparsity), _text(r.M), _text(r.size), _latency(r)]
            + [_num(r.gbps, 0), _num(r.pct_of_copy, 1)]
            + ([_num(r.ratio_vs_quant_only), _num(r.ideal_ratio)] if slide else [])
            for r in f.itertuples()
        ]
        cols = ["@kernel", "@M", size, "@median_us", "@gbps", "@pct_copy", *slide]
        tables.append({"dtype": dtype, "out": out_dtype, "columns": cols, "rows": rows})
    findings = speedups.quant_findings(q)
    for g in findings:
        g["low_pct"] = _num(g["low_pct"], 1)
        g["ratios"] = [
            {**r, "ratio": _num(r["ratio"]), "ideal": _num(r["ideal"])} for r in g["ratios"]
        ]
    interp = q[q["interpreter"].astype(bool)]
    timers = sorted({str(t) for t in interp["timer"] if frames.present(t)})
    return {"tables": tables, "interpreted": len(interp), "timers": timers, "findings": findings}


def _latency(r) -> str:
    """Median (p25–p75) in µs; ‡ marks a time taken in Triton's CPU interpreter."""
    spread = frames.present(r.latency_p25_us) and frames.present(r.latency_p75_us)
    text = _num(r.latency_us) + (
        f" ({_num(r.latency_p25_us)}–{_num(r.latency_p75_us)})" if spread else ""
    )
    return text + ("‡" if r.interpreter else "")


# ---------------------------------------------------------------------- cross-GPU report


def cross_context(
    cells: pd.DataFrame, store: Store, tags: list[str], out: Path, plots: bool
) -> dict:
    machines = [header(store, t, cells[cells["gpu_tag"] == t]) for t in tags]
    # A CPU-only machine's rows are CPU-reference timings: listed, never counted as a GPU.
    gpus = [h for h in machines if not h["cpu"]]
    cpus = [h for h in machines if h["cpu"]]
    sp = speedups.kernel_speedups(cells)
    totals = speedups.model_totals(sp)
    e2e = speedups.e2e_speedups(cells)
    appendix, figures = [], []

    def add(kind: str, dtype: str, f: pd.DataFrame, model: str | None = None) -> None:
        if f.empty:
            return
        lat, fmt = ("dense_tokens_per_s", _tok) if kind in _E2E else ("dense_latency_us", _num)
        keys = ["gpu_tag", "M"]
        eff = speedups.efficiencies(f, [c for c in ("gpu_tag", "M", "model", "N", "K") if c in f])
        eff = eff.assign(speedup=eff["efficiency"], suspect=False)
        appendix.append(
            {
                "kind": kind,
                "dtype": dtype,
                "model": model,
                "speedup": _speedup_table(f, keys, lat, fmt),
                "efficiency": _eff_table(eff, keys, lat, fmt),
            }
        )

    for dtype in sorted(set(sp["dtype"]) | set(e2e["dtype"])):
        square = sp[(sp["mode"] == "square") & (sp["dtype"] == dtype)]
        add("square", dtype, square)
        t = totals[totals["dtype"] == dtype]
        for model in frames.order_models(t["model"]):
            add("model", dtype, t[t["model"] == model], model)
        for task in _E2E:
            g = e2e[(e2e["task"] == task) & (e2e["dtype"] == dtype)]
            for model in frames.order_models(g["model"]):
                for stack, h in g[g["model"] == model].groupby("stack", sort=True):
                    add(task, dtype, h, model if stack == "vllm" else f"{model} ({stack})")
        prefill = e2e[(e2e["task"] == "e2e-prefill") & (e2e["dtype"] == dtype)]
        # One stack per GPU in the heatmap: the engine's rows where a GPU has both.
        engine_tags = set(prefill.loc[prefill["stack"] == "engine", "gpu_tag"])
        prefill = prefill[(prefill["stack"] == "engine") | ~prefill["gpu_tag"].isin(engine_tags)]
        for kind, f in (("square", square), ("prefill", prefill)) if plots else ():
            fig = _heatmap(f, tags, out / f"cross_gpu.{kind}.{dtype}.png", f"{kind} {dtype}")
            if fig:
                figures.append({"kind": kind, "dtype": dtype, "file": fig.name})
    return {
        "gpus": gpus,
        "cpus": cpus,
        "appendix": appendix,
        "figures": figures,
        "suspect": int(sp["suspect"].sum() + totals["suspect"].sum() + e2e["suspect"].sum()),
        **_interval_counts(sp, totals),
    }


def _heatmap(f: pd.DataFrame, tags: list[str], path: Path, title: str) -> Path | None:
    f = f[~f["suspect"]]
    if f.empty or f["gpu_tag"].nunique() < 2:
        return None
    common = set.intersection(*(set(g["M"]) for _, g in f.groupby("gpu_tag")))
    if not common:
        return None
    m = max(common)
    at = f[f["M"] == m].groupby(["gpu_tag", "sparsity"])["speedup"].median()
    patterns = frames.order_patterns(at.index.get_level_values(1))
    rows = [t for t in tags if t in at.index.get_level_values(0)]
    values = [[at.get((t, p)) for p in patterns] for t in rows]
    from slidesparse.report import plots

    return plots.heatmap([r.split("_")[0] for r in rows], patterns, values, path, f"{title}, M={m}")
