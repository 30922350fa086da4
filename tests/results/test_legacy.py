"""Legacy import against the original scripts' own derived numbers and the seed reports.

Reads ../shared/legacy-vllmbench and ../shared/seed-reports (relative to the repository);
skipped cleanly where they are absent.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from slidesparse.report import build as R
from slidesparse.report import failures, frames, sections, speedups
from slidesparse.results.legacy import (
    UNRECORDED_TIME,
    gpu_tag_from_folder,
    import_legacy,
    machine_from_tag,
)
from slidesparse.results.store import Store

H100 = "H100_cc90_py312_cu129_x86_64"
B200 = "B200_cc100_py312_cu129_x86_64"


def test_gpu_tag_from_folder():
    assert gpu_tag_from_folder("H100_cc90_FP8E4M3_py312_cu129_x86_64") == (H100, "fp8")
    assert gpu_tag_from_folder("B200_cc100_INT8_py312_cu129_x86_64") == (B200, "int8")
    assert gpu_tag_from_folder(H100) == (H100, None)
    m = machine_from_tag("GB10_cc121_py312_cu129_aarch64")
    assert (m["cc"], m["python"], m["cuda_runtime"], m["arch"]) == (
        [12, 1],
        "3.12",
        "12.9",
        "aarch64",
    )
    assert m["source"] == "legacy"


@pytest.fixture(scope="module")
def imported(tmp_path_factory, legacy_dir):
    store = Store(tmp_path_factory.mktemp("legacy"))
    summary = import_legacy(legacy_dir, store)
    cells = frames.resolve_cells(frames.plain(store.read()))
    return store, summary, cells


def test_import_is_complete_and_idempotent(imported, legacy_dir):
    store, summary, cells = imported
    assert set(summary.rows) == {H100, B200}
    assert summary.skipped == []
    assert summary.rows[H100]["failed"] > 0
    before = {p: p.read_bytes() for p in store.part_files()}
    # a part of the same tree maps to the same runs and rows: nothing changes
    again = import_legacy(legacy_dir / "slidesparse" / "tools", store)
    assert again.rows[H100] == {"ok": 592, "failed": 10}
    assert {p: p.read_bytes() for p in store.part_files()} == before
    assert len(store.read()) == len(cells)
    assert store.read_machine(H100)["gpu_name"] == "H100 PCIe"


def _speedup_files(legacy_dir):
    root = legacy_dir / "slidesparse/benchmark_kernel/kernel_speedup_results"
    return sorted(root.glob("*/speedup/*/*.csv")) if root.is_dir() else []


def test_kernel_speedups_equal_the_legacy_csvs(imported, legacy_dir):
    _, _, cells = imported
    sp = speedups.kernel_speedups(cells)
    totals = speedups.model_totals(sp)
    files = _speedup_files(legacy_dir)
    assert len(files) > 50
    checked = 0
    for path in files:
        tag, dtype, name = path.parts[-4], path.parts[-2].lower(), path.stem
        model = re.sub(r"-INT8$", "", re.sub(r"^(total_)?speedup_", "", name))
        if name.startswith("total_"):
            got = totals[(totals["gpu_tag"] == tag) & (totals["dtype"] == dtype)]
            got = got[got["model"] == model].set_index(["M", "sparsity"])["speedup"]
            keys = ["M"]
        else:
            mode = "square" if model == "SQUARE" else "model"
            got = sp[(sp["gpu_tag"] == tag) & (sp["dtype"] == dtype) & (sp["mode"] == mode)]
            if mode == "model":
                got = got[got["model"] == model]
            got = got.set_index(["M", "N", "K", "sparsity"])["speedup"]
            keys = ["M", "N", "K"]
        for rec in pd.read_csv(path).to_dict("records"):
            for col, expected in rec.items():
                if not col.startswith("cuSPARSE_"):
                    continue
                key = (*(int(rec[k]) for k in keys), col.removeprefix("cuSPARSE_"))
                if pd.isna(expected):
                    assert key not in got.index, (path.name, key)
                else:
                    # The scripts divided full-precision latencies; the CSVs we import keep
                    # three decimals of a µs, which moves a few small-M ratios by < 0.01.
                    assert abs(got[key] - expected) <= 0.01, (path.name, key, got[key])
                    checked += 1
    assert checked > 10000


def test_e2e_speedups_equal_the_legacy_h100_csvs(imported, legacy_dir):
    _, _, cells = imported
    e = speedups.e2e_speedups(cells)
    e = e[e["gpu_tag"] == H100].set_index(["task", "model", "dtype", "M", "sparsity"])["speedup"]
    files = sorted(
        (legacy_dir / "slidesparse/tools/end2end_speedup_results/H100").glob("*/speedup_*.csv")
    )
    assert len(files) == 20
    for path in files:
        model, dt = path.stem.removeprefix("speedup_").rsplit("-", 1)
        for rec in pd.read_csv(path).to_dict("records"):
            for col, expected in rec.items():
                if not col.startswith("cusparse_"):
                    continue
                key = (f"e2e-{path.parent.name}", model, dt.lower(), int(rec["M"]), col[9:])
                if pd.isna(expected):
                    assert key not in e.index, key
                else:
                    assert abs(e[key] - expected) <= 0.005 + 1e-9, (key, e[key])


def _seed_pass_tables(text: str) -> dict:
    """{(stage, dtype): {(variant, model): (ok, total)}} from the seed report's tables."""
    out, stage, dtype, header = {}, None, None, None
    for line in text.splitlines():
        if line.startswith("## "):
            stage = "prefill" if "Prefill" in line else "decode" if "Decode" in line else None
        elif line.startswith("### ") and ("INT8 模型结果" in line or "FP8 模型结果" in line):
            dtype, header = ("int8" if "INT8" in line else "fp8"), None
        elif stage and dtype and line.startswith("|"):
            cols = [c.strip() for c in line.strip("|").split("|")]
            if header is None:
                header = cols
                continue
            if set(cols[0]) <= set("-") or cols[0].startswith("**"):
                continue
            label = cols[0].replace("cuBLASLt", "cublaslt").replace("cuSPARSELt ", "cusparselt 2_")
            label = label.replace("2_2:", "2_")
            for model, cell in zip(header[1:-1], cols[1:-1], strict=True):
                m = re.search(r"(\d+)/(\d+)", cell)
                if m:
                    table = out.setdefault((stage, dtype), {})
                    table[(label, model)] = (int(m[1]), int(m[2]))
        elif not line.strip() and header is not None:
            dtype, header = None, None
    return out


def test_h100_pass_tables_and_failures_equal_the_seed_report(imported, seed_dir):
    _, _, cells = imported
    path = seed_dir / "H100_vllm_benchmark_report.md"
    seed = _seed_pass_tables(path.read_text(encoding="utf-8"))
    assert len(seed) == 4
    h100 = cells[cells["gpu_tag"] == H100]
    ours = {}
    for t in sections.pass_tables(h100, ["e2e-prefill", "e2e-decode"]):
        models = t["columns"][1:-1]
        for row in t["rows"]:
            for model, cell in zip(models, row[1:-1], strict=True):
                m = re.match(r"(\d+)/(\d+)", cell)
                if m:
                    key = (t["task"].removeprefix("e2e-"), t["dtype"])
                    ours.setdefault(key, {})[(row[0], model)] = (int(m[1]), int(m[2]))
    for key, table in seed.items():
        assert {k: ours[key].get(k) for k in table} == table, key
    assert seed["prefill", "int8"]["cublaslt", "Qwen2.5-7B"] == (7, 8)
    # the same 10 failures: Qwen2.5-7B at M=65536, every backend, both dtypes
    failed = h100[(h100["status"] == "failed") & h100["task"].str.startswith("e2e")]
    listed = set(
        zip(failed["model"], failed["dtype"], failed["M"], failed["sparsity"], strict=True)
    )
    patterns = ("dense", "2_4", "2_6", "2_8", "2_10")
    assert listed == {("Qwen2.5-7B", d, 65536, p) for d in ("int8", "fp8") for p in patterns}
    (group,) = failures.failure_groups(h100[h100["task"] == "e2e-prefill"])
    assert group["n"] == 10 and dict(group["factors"])["M"] == 65536
    assert group["recommendation"]["max_m"] == 32768


def test_legacy_reports_render(imported, tmp_path):
    store, _, cells = imported
    assert (cells["started_at"] == pd.Timestamp(UNRECORDED_TIME)).any()
    paths = R.build_reports(store.root, tmp_path, gpu=[H100], lang="en", plots=False)
    assert sorted(p.name for p in paths) == [f"{H100}.e2e.en.md", f"{H100}.kernel.en.md"]
    e2e = (tmp_path / f"{H100}.e2e.en.md").read_text(encoding="utf-8")
    assert "all 10 failures: Qwen2.5-7B, M=65536" in e2e
    assert "**Total time**: not recorded" in e2e
    # A legacy machine is the GPU its tag names, never a CPU-only run.
    assert "(compute capability 9.0)" in e2e and "CPU only" not in e2e
    assert "| Qwen2.5-7B | int8 | 65536 | cublaslt |" in e2e
