"""Import the original research scripts' result folders into the store.

The formats are described in docs/method.md, "Legacy result folders".

Two kinds of folders are read, wherever they sit under the given path:

* ``benchmark_kernel/{cuBLASLt,cuSPARSELt}/alg_search_results/<tag>/<DTYPE>/alg_search_*.csv``
  (``#`` header, then the top-3 algorithms per (M, N, K)); one ``kernel-gemm`` row per cell,
  the fastest algorithm in the row, the other two kept in ``extra``.
* ``tools/throughput_benchmark_results/{prefill,decode}/<tag_with_dtype>/<backend>[/2_L]/*.csv``
  (vLLM throughput, ``-1`` marks a failed run); one ``e2e-prefill``/``e2e-decode`` row per M.

Cells the header promises (``M_list`` x ``NK_list``) but the file lacks, cells with no
algorithm (``alg_count`` 0) and cells with a zero latency are recorded as failed, so the
reports count them. Everything is deterministic: run ids derive from the folder, row ids
from the run and the cell, so importing the same folder twice changes nothing.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from slidesparse.core.errors import UserError
from slidesparse.core.hardware import MachineRecord, parse_tag
from slidesparse.results.store import KEY_COLUMNS, Store, StoreWarning

# The legacy throughput files carry no timestamp; rows get this sentinel and reports say
# "not recorded" for it (see analysis.recorded_times).
UNRECORDED_TIME = datetime(1970, 1, 1, tzinfo=UTC)

_DTYPES = {
    "FP16": "fp16",
    "BF16": "bf16",
    "INT8": "int8",
    "INT32": "int32",
    "FP8": "fp8",
    "FP8E4M3": "fp8",
    "FP4": "fp4",
    "FP4E2M1": "fp4",
}
_BACKENDS = {"cuBLASLt": "cublaslt", "cuSPARSELt": "cusparselt"}
_KERNELS = {"cublaslt": "cublasLtMatmul", "cusparselt": "cusparseLtMatmul"}


class LegacyWarning(StoreWarning):
    """A legacy file that could not be read and was skipped."""


@dataclass
class ImportSummary:
    """What one import wrote: rows per GPU tag and status, files read and skipped."""

    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    files_read: int = 0
    skipped: list[str] = field(default_factory=list)

    def count(self, tag: str, status: str, n: int = 1) -> None:
        per_tag = self.rows.setdefault(tag, {})
        per_tag[status] = per_tag.get(status, 0) + n


def gpu_tag_from_folder(name: str) -> tuple[str, str | None]:
    """``H100_cc90_FP8E4M3_py312_cu129_x86_64`` -> (``H100_cc90_py312_cu129_x86_64``, "fp8")."""
    try:
        parts = parse_tag(name)
    except UserError:  # not a tag: the caller reports the folder
        return name, None
    dtype = parts["dtype"]
    return parts["tag"], _DTYPES[dtype.upper()] if dtype else None


def machine_from_tag(tag: str, gpu_name: str | None = None, torch: str | None = None) -> dict:
    """A machine record synthesized from a legacy GPU tag (the scripts saved none)."""
    try:
        parts = parse_tag(tag)
    except UserError:
        raise UserError(
            f"legacy folder {tag!r} is not a GPU tag like H100_cc90_py312_cu129_x86_64"
        ) from None
    record = MachineRecord.from_dict(
        {
            "gpu_name": gpu_name or parts["gpu"],
            "cc": parts["cc"],
            "cuda_runtime": parts["cuda"],
            "torch": torch,
            "python": parts["py"],
            "arch": parts["arch"],
            "gpu_tag": tag,
        }
    )
    # Nothing else about that machine is known: not its GPU count, nor this machine's hostname.
    return {**record.to_dict(), "hostname": None, "gpu_count": None, "source": "legacy"}


def _digest(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()


def _finish(row: dict, run_id: str) -> dict:
    key = [row.get(c) for c in KEY_COLUMNS]
    row["cell_id"] = _digest(*key)[:16]
    row["row_id"] = _digest(run_id, row["cell_id"])[:24]
    row["run_id"] = run_id
    row["source"] = "legacy"
    return row


def _split_model(name: str) -> str:
    # Legacy model names carry the checkpoint's quantization: "Qwen2.5-7B-INT8".
    return re.sub(r"-(INT8|FP8|FP8E4M3)$", "", name, flags=re.IGNORECASE)


# ---------------------------------------------------------------- kernel alg-search files


def _read_header(path: Path) -> dict[str, str]:
    header = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            key, _, value = line[1:].partition(":")
            header[key.strip()] = value.strip()
    return header


def _layer_of(model: str, pattern: str | None, n: int, k_file: int) -> tuple[str, int]:
    """(layer, original K) of a file's (N, K); sparse files list K after sliding.

    The legacy scripts padded K_slide slightly differently from docs/method.md, "The
    transform" (e.g. 3520 instead of 3552 for K=2048 under 2_14), so the layer is the one with
    this N whose expected K_slide is nearest, within 5%.
    """
    from slidesparse.core.models import get_model
    from slidesparse.core.sparsity import k_slide

    best = None
    for layer, (ln, lk) in get_model(model).layers.items():
        if ln != n:
            continue
        expected = lk if pattern is None else k_slide(lk, pattern)
        gap = abs(expected - k_file) / expected
        if gap <= 0.05 and (best is None or gap < best[0]):
            best = (gap, layer, lk)
    if best is None:
        raise ValueError(f"N={n}, K={k_file} is no layer of {model} under {pattern or 'dense'}")
    return best[1], best[2]


def _kernel_file_rows(path: Path, rel: str, tag: str, backend: str, run_id: str) -> list[dict]:
    header = _read_header(path)
    mode = header.get("Mode", "").lower()
    model_raw = header.get("Model", "")
    src, _, dst = header.get("dtype", "").partition("->")
    dtype = _DTYPES.get(src.strip().upper())
    out_dtype = _DTYPES.get(dst.strip().upper())
    if mode not in ("model", "square") or dtype is None:
        raise ValueError(f"unrecognized header (Mode={mode!r}, dtype={header.get('dtype')!r})")
    pattern = header.get("Sparsity", "").split(" ")[0] or None
    if backend == "cusparselt" and pattern is None:
        raise ValueError("cuSPARSELt file without a Sparsity header")
    started = datetime.fromisoformat(header["Time"]).replace(tzinfo=UTC)
    repeat = re.search(r"repeat=(\d+)", " ".join(header))  # "# warmup=25, repeat=50, ..."
    m_driver = re.search(r"([\d.]+), runtime: ([\d.]+)", header.get("CUDA driver", ""))
    versions = {"torch": header.get("torch")}
    if m_driver:
        versions.update(driver=m_driver[1], cuda=m_driver[2])
    model = None if mode == "square" else _split_model(model_raw)

    frame = pd.read_csv(path, comment="#")
    m_list = [int(m) for m in ast.literal_eval(header["M_list"])]
    nk_list = [(int(n), int(k)) for n, k in ast.literal_eval(header["NK_list"])]
    if mode == "square":  # one shape per M: N = M
        expected = [(m, n, k) for m in m_list for n, k in nk_list if n == m]
    else:
        expected = [(m, n, k) for m in m_list for n, k in nk_list]
    measured = {(int(r.M), int(r.N), int(r.K)): r for r in frame.itertuples(index=False)}
    rows = []
    for m, n, k_file in expected:
        if mode == "square":
            layer, k = None, n  # square: K = N before sliding
        else:
            layer, k = _layer_of(model, pattern, n, k_file)
        row: dict[str, Any] = {
            "task": "kernel-gemm",
            "gpu_tag": tag,
            "model": model,
            "layer": layer,
            "mode": mode,
            "dtype": dtype,
            "out_dtype": out_dtype,
            "backend": backend,
            "kernel": _KERNELS[backend],
            "sparsity": pattern or "dense",
            "M": m,
            "N": n,
            "K": k,
            "K_slide": k_file if pattern else None,
            "started_at": started,
            "n_samples": int(repeat[1]) if repeat else None,
            "versions": versions,
        }
        extra: dict[str, Any] = {"legacy_file": rel}
        rec = measured.get((m, n, k_file))
        lat = None if rec is None else getattr(rec, "lat_us_1", None)
        if rec is None:
            row.update(status="failed", error_class="error")
            row["error_message"] = "cell missing from the legacy result file (search stopped early)"
        elif int(rec.alg_count) == 0 or pd.isna(lat):
            row.update(status="failed", error_class="error")
            row["error_message"] = "legacy search found no working algorithm (alg_count 0)"
        elif float(lat) <= 0.0:
            row.update(status="failed", error_class="error")
            row["error_message"] = (
                "legacy row has zero latency / infinite TOPS (invalid measurement)"
            )
        else:
            row.update(status="ok", latency_us=float(lat), tops=float(rec.tops_1))
            row["alg_id"] = int(rec.alg_id_1)
            split = getattr(rec, "split_k_1", None)
            row["split_k"] = None if split is None or pd.isna(split) else int(split)
            row["workspace_bytes"] = int(rec.workspace_1)
            extra["alg_count"] = int(rec.alg_count)
            extra["runner_up_algorithms"] = _runner_ups(rec)
        row["extra"] = extra
        rows.append(_finish(row, run_id))
    return rows


def _runner_ups(rec) -> list[dict]:
    out = []
    for i in (2, 3):
        lat = getattr(rec, f"lat_us_{i}", None)
        if lat is None or pd.isna(lat):
            continue
        alg = {"latency_us": float(lat), "tops": float(getattr(rec, f"tops_{i}"))}
        alg["alg_id"] = int(getattr(rec, f"alg_id_{i}"))
        split = getattr(rec, f"split_k_{i}", None)
        if split is not None and not pd.isna(split):
            alg["split_k"] = int(split)
        out.append(alg)
    return out


# ---------------------------------------------------------------- end-to-end throughput


def _e2e_file_rows(
    path: Path, rel: str, tag: str, dtype: str, stage: str, backend: str, pattern: str, run_id: str
) -> list[dict]:
    frame = pd.read_csv(path)
    model_raw = path.name.rsplit("_", 1)[0]  # "Qwen2.5-7B-INT8_prefill.csv"
    m_col = "M_prefill" if stage == "prefill" else "M_decode"
    rows = []
    for rec in frame.to_dict("records"):
        failed = float(rec["tokens_per_s"]) < 0
        row: dict[str, Any] = {
            "task": f"e2e-{stage}",
            "gpu_tag": tag,
            "model": _split_model(model_raw),
            "mode": stage,
            "dtype": dtype,
            "backend": backend,
            "sparsity": pattern,
            "M": int(rec[m_col]),
            "prompt_len": int(rec["prompt_len"]),
            "output_len": int(rec["output_len"]) if "output_len" in rec else 1,
            "max_num_seqs": int(rec["max_num_seqs"]),
            "num_prompts": int(rec["num_prompts"]),
            "started_at": UNRECORDED_TIME,
            "extra": {"legacy_file": rel, "legacy_model": model_raw},
        }
        if failed:
            row.update(status="failed", error_class="error")
            row["error_message"] = "legacy run recorded -1 (failed; cause not recorded)"
        else:
            row.update(status="ok", tokens_per_s=float(rec["tokens_per_s"]))
            row["requests_per_s"] = float(rec["requests_per_s"])
            row["elapsed_s"] = float(rec["elapsed_time_s"])
        rows.append(_finish(row, run_id))
    return rows


# ---------------------------------------------------------------- walking a legacy tree


def _kernel_runs(root: Path):
    """Yield (run folder, GPU tag, backend, [csv files]) for every alg-search result folder."""
    for results in sorted(root.rglob("alg_search_results")):
        backend = _BACKENDS.get(results.parent.name)
        if backend is None or not results.is_dir():
            continue
        for tag_dir in sorted(p for p in results.iterdir() if p.is_dir()):
            yield tag_dir, tag_dir.name, backend, sorted(tag_dir.glob("*/alg_search_*.csv"))


def _e2e_runs(root: Path):
    """Yield (run folder, GPU tag, dtype, stage, [(backend, pattern, csv)])."""
    for results in sorted(root.rglob("throughput_benchmark_results")):
        for stage in ("prefill", "decode"):
            stage_dir = results / stage
            if not stage_dir.is_dir():
                continue
            for tag_dir in sorted(p for p in stage_dir.iterdir() if p.is_dir()):
                tag, dtype = gpu_tag_from_folder(tag_dir.name)
                files = []
                for csv in sorted(tag_dir.glob("*/*.csv")) + sorted(tag_dir.glob("*/*/*.csv")):
                    parts = csv.relative_to(tag_dir).parts
                    backend = parts[0].lower()
                    pattern = parts[1] if len(parts) == 3 else "dense"
                    files.append((backend, pattern, csv))
                yield tag_dir, tag, dtype, stage, files


def import_legacy(path: Path | str, store: Store) -> ImportSummary:
    """Read every legacy result folder under ``path`` into ``store``; return what was written.

    One part file per legacy run folder (``parts/legacy-<run_id>.parquet``), rewritten
    identically on a second import. Unreadable files are skipped with a :class:`LegacyWarning`.
    """
    root = Path(path)
    if not root.exists():
        raise UserError(f"{root}: no such folder; pass the legacy results folder (vllmbench)")
    summary = ImportSummary()
    per_run: list[tuple[str, str, list[dict], dict]] = []

    for run_dir, tag, backend, files in _kernel_runs(root):
        run_id = _run_id(run_dir, 3)  # cuSPARSELt/alg_search_results/<tag>
        rows, info = [], {}
        for csv in files:
            rel = _rel(csv, "alg_search_results", 1)
            try:
                header = _read_header(csv)
                info.setdefault("gpu_name", header.get("GPU", "").replace("NVIDIA ", "") or None)
                info.setdefault("torch", header.get("torch"))
                rows += _kernel_file_rows(csv, rel, tag, backend, run_id)
                summary.files_read += 1
            except (ValueError, KeyError, SyntaxError, UserError, OSError) as exc:
                _skip(summary, rel, exc)
        per_run.append((tag, run_id, rows, info))

    for run_dir, tag, dtype, stage, files in _e2e_runs(root):
        run_id = _run_id(run_dir, 3)  # throughput_benchmark_results/prefill/<tag_with_dtype>
        rows = []
        for backend, pattern, csv in files:
            rel = _rel(csv, "throughput_benchmark_results", 0)
            try:
                rows += _e2e_file_rows(csv, rel, tag, dtype, stage, backend, pattern, run_id)
                summary.files_read += 1
            except (ValueError, KeyError, OSError) as exc:
                _skip(summary, rel, exc)
        per_run.append((tag, run_id, rows, {}))

    if not any(rows for _, _, rows, _ in per_run):
        raise UserError(
            f"{root}: no legacy results found (expected alg_search_results/ or "
            "throughput_benchmark_results/ folders below it)"
        )
    machines: dict[str, dict] = {}
    for tag, run_id, rows, info in per_run:
        if not rows:
            continue
        store.write_rows(tag, rows, name=run_id)
        for r in rows:
            summary.count(tag, r["status"])
        known = machines.setdefault(tag, {})
        for k, v in info.items():
            known.setdefault(k, v)
    for tag, info in machines.items():
        old = store.read_machine(tag) or {"source": "legacy"}
        if old.get("source") != "legacy":
            continue  # a record measured on the machine beats one made from a folder name
        new = machine_from_tag(tag, info.get("gpu_name") or old.get("gpu_name"), info.get("torch"))
        store.write_machine(tag, {**new, **{k: v for k, v in old.items() if new.get(k) is None}})
    return summary


def _rel(path: Path, anchor: str, before: int) -> str:
    """``path`` from ``before`` parts above its ``anchor`` folder, whatever root was given."""
    parts = path.parts
    start = len(parts) - 1 - parts[::-1].index(anchor) - before
    return "/".join(parts[start:])


def _run_id(run_dir: Path, depth: int) -> str:
    # The run is named by the folder's last ``depth`` parts, so that importing the whole tree
    # or only a part of it gives the same run and row ids.
    return "legacy-" + _digest("/".join(run_dir.parts[-depth:]))[:12]


def _skip(summary: ImportSummary, rel: str, exc: Exception) -> None:
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    summary.skipped.append(f"{rel}: {reason}")
    warnings.warn(f"skipped legacy file {rel}: {reason}", LegacyWarning, stacklevel=3)
