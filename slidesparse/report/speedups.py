"""Speedups for the reports, by the rules of :mod:`slidesparse.core.metrics`.

* Kernel speedup: for one (GPU, mode, model, layer, dtype, M) the dense baseline is the
  fastest ok ``dense`` row, whatever its backend; each pattern's latency is its fastest ok
  row; speedup = dense latency / pattern latency. Where that pattern row was timed
  interleaved with the baseline's backend (the kernel-gemm task's ``extra``), its own median
  per-round ratio is the speedup instead, with its 95% interval (``speedup_lo``/``_hi``;
  ``noise`` where it holds 1.0). A model total sums the four layers at the same M, only where
  all four exist on both sides; its interval combines the layers' where all four have one
  (:func:`slidesparse.core.metrics.total_speedup`).
* End-to-end speedup: sparse tokens/s over the dense tokens/s of the same (GPU, stage,
  model, dtype, M); also over vLLM's CUTLASS path where that was measured.
* A speedup above the ideal bound L/(L-2) by more than 3% marks the baseline as suspect: it
  is shown, flagged, never as a result.
* Eff_L = (S_L / S_2_4) / (0.5 · L/(L-2)) (docs/method.md).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from slidesparse.core import metrics
from slidesparse.core.models import LAYERS
from slidesparse.kernels.bench import KERNELS
from slidesparse.report.frames import order_patterns, present, sparse_order, variant

# ------------------------------------------------------------------------ kernel speedups

_KGROUP = ["gpu_tag", "mode", "model", "layer", "dtype", "M", "N", "K"]


def _fastest(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    f = frame.sort_values("latency_us", kind="stable")
    return f.groupby(by, dropna=False, sort=False).head(1)


def kernel_speedups(cells: pd.DataFrame) -> pd.DataFrame:
    """Per-layer (or square) kernel speedups over the strongest dense baseline.

    Columns: gpu_tag, mode, model, layer, dtype, M, N, K, sparsity, dense_latency_us,
    dense_backend, latency_us, backend, speedup, speedup_lo, speedup_hi (NaN: no interval),
    ideal, suspect, noise.
    """
    cols = [*_KGROUP, "sparsity", "dense_latency_us", "dense_backend", "latency_us"]
    cols += ["backend", "speedup", *_INTERVAL, "ideal", "suspect", "noise"]
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
    extra = [
        extra_dict(e) for e in (sparse["extra"] if "extra" in sparse else [None] * len(sparse))
    ]
    sparse = sparse[[*_KGROUP, "sparsity", "latency_us", "backend"]].assign(
        _paired=[_float(e.get("speedup_vs_dense")) for e in extra],
        _paired_with=[e.get("dense_backend") for e in extra],
        speedup_lo=[_float(e.get("speedup_lo")) for e in extra],
        speedup_hi=[_float(e.get("speedup_hi")) for e in extra],
    )
    out = dense.merge(sparse, on=_KGROUP, how="inner")
    paired = (out["_paired_with"] == out["dense_backend"]) & out[_INTERVAL].notna().all(axis=1)
    out.loc[~paired, _INTERVAL] = np.nan
    speedup = (out["dense_latency_us"] / out["latency_us"]).where(~paired, out["_paired"])
    return _with_speedup(out, speedup)[cols]


_INTERVAL = ["speedup_lo", "speedup_hi"]


def backend_wins(cells: pd.DataFrame) -> pd.DataFrame:
    """Which backend was fastest where several ran the same shape (dense, or one pattern),
    by :func:`slidesparse.core.metrics.backend_wins`: one row per (gpu_tag, dtype, side,
    backend), side being ``dense`` or the pattern, with won, of and vs_best."""
    cols = ["gpu_tag", "dtype", "side", "backend", "won", "of", "vs_best"]
    if cells.empty:
        return pd.DataFrame(columns=cols)
    ok = cells[(cells["task"] == "kernel-gemm") & (cells["status"] == "ok")]
    ok = ok[ok["latency_us"].notna() & (ok["layer"].fillna("") != "total")]
    shape = ["mode", "model", "layer", "M", "N", "K"]
    lat = [
        ((r["gpu_tag"], r["dtype"], r["sparsity"]), tuple(r[c] for c in shape), r["backend"],
         float(r["latency_us"]))
        for r in ok.fillna({"model": "", "layer": ""}).to_dict("records")
    ]  # fmt: skip
    wins = metrics.backend_wins(lat)
    rows = [
        dict(zip(cols[:3], w["group"], strict=True), **{k: w[k] for k in cols[3:]}) for w in wins
    ]
    return pd.DataFrame(rows, columns=cols)


def _with_speedup(frame: pd.DataFrame, speedup: pd.Series) -> pd.DataFrame:
    frame = frame.assign(speedup=speedup.astype(float))
    for c in _INTERVAL:
        frame[c] = frame[c].astype(float) if c in frame else np.nan
    frame["ideal"] = [metrics.ideal(p) for p in frame["sparsity"]]
    suspect = [
        metrics.is_suspect(s, p) for s, p in zip(frame["speedup"], frame["sparsity"], strict=True)
    ]
    frame["suspect"] = pd.Series(suspect, index=frame.index, dtype=bool)
    noise = [
        metrics.within_noise(lo, hi)
        for lo, hi in zip(frame["speedup_lo"], frame["speedup_hi"], strict=True)
    ]
    frame["noise"] = pd.Series(noise, index=frame.index, dtype=bool)
    return frame.reset_index(drop=True)


def model_totals(speedups: pd.DataFrame) -> pd.DataFrame:
    """Model-total speedups: the four layer latencies summed at the same M, both sides; where
    every layer has an interleaved speedup, the layers' speedups and intervals combined."""
    group = ["gpu_tag", "model", "dtype", "M", "sparsity"]
    cols = [*group, "dense_latency_us", "latency_us", "speedup", *_INTERVAL, "ideal", "suspect"]
    cols += ["noise"]
    model = speedups[speedups["mode"] == "model"]
    out = []
    for key, g in model.groupby(group, sort=False):
        if not set(g["layer"]) >= set(LAYERS):
            continue
        dense, lat = g["dense_latency_us"].sum(), g["latency_us"].sum()
        row = dict(zip(group, key, strict=True), dense_latency_us=dense, latency_us=lat)
        row["speedup"] = dense / lat
        if g[_INTERVAL].notna().all(axis=None):
            d = g["dense_latency_us"].tolist()
            for c in ("speedup", *_INTERVAL):
                row[c] = metrics.total_speedup(d, g[c].tolist())
        out.append(row)
    if not out:
        return pd.DataFrame(columns=cols)
    f = pd.DataFrame(out)
    return _with_speedup(f, f["speedup"])[cols]


def incomplete_totals(speedups: pd.DataFrame) -> list[dict]:
    """Model totals that cannot be summed: per (GPU, model, dtype, pattern, missing layers),
    the M values and the layers missing on either side, so a report can list them."""
    model = speedups[speedups["mode"] == "model"]
    if model.empty:
        return []
    group = ["gpu_tag", "model", "dtype", "sparsity", "M"]
    have = model.groupby(group, sort=False)["layer"].agg(frozenset).reset_index()
    have["missing"] = [tuple(x for x in LAYERS if x not in s) for s in have["layer"]]
    have = have[have["missing"].map(bool)]
    out = []
    keys = ["gpu_tag", "model", "dtype", "sparsity", "missing"]
    for key, g in have.groupby(keys, sort=False):
        row = dict(zip(keys, key, strict=True))
        out.append({**row, "M": sorted(int(m) for m in g["M"]), "missing": list(row["missing"])})
    return out


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


def extra_dict(text) -> dict:
    """A row's ``extra`` JSON as a dict ({} where it is absent, broken or not an object)."""
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
    extra = [extra_dict(e) for e in (f["extra"] if "extra" in f else [None] * len(f))]
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
    rank = {p: i for i, p in enumerate(("dense", *sparse_order()))}
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

_EGROUP = ["gpu_tag", "task", "mode", "model", "dtype", "M", "stack"]
# Per stack: the backend of its dense baseline and of its extra reference. Speedups are only
# ever taken inside one stack: a sparse engine row over the engine's dense W8A8 row of the
# same run, a (legacy) vLLM sparse row over vLLM's cuBLASLt row.
STACKS = {
    "engine": {"dense": ("engine", None), "ref": ("engine", "bf16")},
    "vllm": {"dense": ("cublaslt", None), "ref": ("cutlass", None)},
}


def e2e_stack(backend) -> str:
    """``engine`` for slidesparse's engine rows, ``vllm`` for vLLM rows (new or imported)."""
    return "engine" if backend == "engine" else "vllm"


def e2e_speedups(cells: pd.DataFrame) -> pd.DataFrame:
    """End-to-end speedups per stack: sparse tokens/s over the same stack's dense tokens/s
    (engine: dense W8A8; vLLM: cuBLASLt), plus the speedup over the stack's reference
    (engine: the bf16 engine; vLLM: its CUTLASS path) where that was measured."""
    cols = [*_EGROUP, "sparsity", "dense_tokens_per_s", "tokens_per_s", "speedup"]
    cols += ["ref_tokens_per_s", "speedup_vs_ref", "ideal", "suspect"]
    if cells.empty:
        return pd.DataFrame(columns=cols)
    ok = cells[cells["task"].isin(["e2e-prefill", "e2e-decode"]) & (cells["status"] == "ok")]
    ok = ok[ok["tokens_per_s"].notna()]
    ok = ok.assign(stack=[e2e_stack(b) for b in ok["backend"]])
    out = []
    for stack, roles in STACKS.items():
        rows = ok[ok["stack"] == stack]
        if rows.empty:
            continue

        def best(role: str, name: str, rows=rows, roles=roles) -> pd.DataFrame:
            backend, dtype = roles[role]
            f = rows[(rows["backend"] == backend) & (rows["sparsity"] == "dense")]
            keys = [k for k in _EGROUP if k != "dtype"] if dtype else _EGROUP
            f = f[f["dtype"] == dtype] if dtype else f[f["dtype"] != "bf16"]
            f = f.sort_values("tokens_per_s", ascending=False, kind="stable")
            return (
                f.groupby(keys, sort=False)
                .head(1)[[*keys, "tokens_per_s"]]
                .rename(columns={"tokens_per_s": name})
            )

        sparse = rows[rows["sparsity"] != "dense"].sort_values("tokens_per_s", ascending=False)
        sparse = sparse.groupby([*_EGROUP, "sparsity"], sort=False).head(1)
        f = best("dense", "dense_tokens_per_s").merge(
            sparse[[*_EGROUP, "sparsity", "tokens_per_s"]], on=_EGROUP, how="inner"
        )
        ref = best("ref", "ref_tokens_per_s")
        f = f.merge(ref, on=[k for k in _EGROUP if k in ref.columns], how="left")
        out.append(f)
    if not out:
        return pd.DataFrame(columns=cols)
    f = pd.concat(out, ignore_index=True)
    f["speedup_vs_ref"] = f["tokens_per_s"] / f["ref_tokens_per_s"]
    return _with_speedup(f, f["tokens_per_s"] / f["dense_tokens_per_s"])[cols]
