"""Rendered reports: golden files on a synthetic store, languages, empty and failed stores, CLI.

Regenerate the goldens after an intended change with
``SLIDESPARSE_UPDATE_GOLDEN=1 python -m pytest tests/report/test_report.py`` and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from synthetic_rows import CPU, ENGINE_TAG, TAG, TAG2, cpu_smoke_rows, engine_rows, synthetic_rows

from slidesparse.cli import main
from slidesparse.core.errors import StoreWarning, UserError
from slidesparse.report.build import build_reports
from slidesparse.results.store import Store

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SLIDESPARSE_UPDATE_GOLDEN") == "1"


def _machine(tag: str) -> dict:
    gpu, cc = tag.split("_")[:2]
    return {
        "gpu_name": gpu,
        "cc": [int(cc[2:-1]), int(cc[-1])],
        "cuda_runtime": "12.9",
        "python": "3.12",
        "torch": "2.11.0",
        "arch": "x86_64",
        "driver": "580.1",
        "memory_bytes": 80 * 2**30,
        "gpu_tag": tag,
    }


@pytest.fixture
def results(tmp_path, monkeypatch):
    # reports print the store path: a relative one keeps the goldens independent of tmp_path
    monkeypatch.chdir(tmp_path)
    store = Store("results")
    for tag, scale in ((TAG, 1.0), (TAG2, 0.5)):
        store.write_rows(tag, synthetic_rows(tag, scale), name="part-0")
        store.write_machine(tag, _machine(tag))
    return store


# what a null renders as when it leaks into the text instead of "-" / "not recorded"
NULL_WORDS = re.compile(r"\b(nan|NaN|None|null)\b|<NA>|NaT")


@pytest.fixture
def cpu_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store("results")
    store.write_rows(CPU, cpu_smoke_rows(), name="part-0")
    machine = {"gpu_tag": CPU, "gpu_short": "CPU", "gpu_name": None, "cc": None}
    store.write_machine(
        CPU,
        {**machine, "gpu_count": 0, "python": "3.11.7", "torch": "2.13.0+cpu", "arch": "x86_64"},
    )
    return store


def _check_golden(paths) -> None:
    for path in paths:
        text = path.read_bytes().decode("utf-8")  # strict: the file is valid UTF-8
        assert not NULL_WORDS.search(text), (path.name, NULL_WORDS.search(text))
        golden = GOLDEN / path.name
        if UPDATE:
            golden.write_text(text, encoding="utf-8")
        assert golden.is_file(), f"missing golden {golden}; run with SLIDESPARSE_UPDATE_GOLDEN=1"
        assert text == golden.read_text(encoding="utf-8"), path.name


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_reports_match_golden(results, lang):
    paths = build_reports("results", "out", lang=lang, plots=False)
    names = sorted(p.name for p in paths)
    expected = sorted(
        [f"{t}.{k}.{lang}.md" for t in (TAG, TAG2) for k in ("kernel", "e2e")]
        + [f"cross_gpu.{lang}.md"]
    )
    assert names == expected
    _check_golden(paths)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_cpu_smoke_reports_match_golden(cpu_results, lang):
    paths = build_reports("results", "out", lang=lang, plots=False)
    assert sorted(p.name for p in paths) == [f"{CPU}.e2e.{lang}.md", f"{CPU}.kernel.{lang}.md"]
    _check_golden(paths)


def test_skipped_cells_are_not_failures(cpu_results):
    build_reports("results", "out", plots=False)
    kernel = (Path("out") / f"{CPU}.kernel.en.md").read_text(encoding="utf-8")
    e2e = (Path("out") / f"{CPU}.e2e.en.md").read_text(encoding="utf-8")
    # nothing failed: no ❌ anywhere, skipped cells counted apart in cells and totals
    assert "❌" not in kernel and "❌" not in e2e
    assert "| cublaslt | ⏭️ 2 skipped | ⏭️ 2 skipped | ⏭️ 4 skipped |" in kernel
    assert "| cpu-ref 2_4 | - | 2/2 ✅ | 2/2 |" in kernel
    assert "| Total | ⏭️ 6 skipped | 6/6 (+6 skipped) | 6/6 (+12 skipped) |" in kernel
    assert "| Total | ⏭️ 2 skipped | ⏭️ 2 skipped |" in e2e
    # the summary says why
    assert "| kernel-gemm · cublaslt · square | ⏭️ | 0 | 0 | 2 | skipped: no CUDA device (2) |" in (
        kernel
    )
    assert "| e2e-prefill | ⏭️ | 0 | 0 | 2 | skipped: no CUDA device (2) |" in e2e
    # a reason shared by the whole task is stated alone, without coincidental factors
    assert "1. all 2 cells skipped: no CUDA device (task `e2e-decode`)." in e2e
    assert "1. 12 cells skipped: no CUDA device (task `kernel-gemm`)." in kernel
    assert "Every run was skipped" in e2e and "No run succeeded" not in e2e


def test_quant_rows_are_labelled_by_kernel(cpu_results):
    build_reports("results", "out", plots=False)
    kernel = (Path("out") / f"{CPU}.kernel.en.md").read_text(encoding="utf-8")
    for name in ("quant_slide", "dequant_bias"):
        assert f"| kernel-quant · {name} | ⏭️ | 0 | 0 |" in kernel
    # the small quant_only cell ran in the CPU interpreter, the large ones were skipped
    assert "| kernel-quant · quant_only | ✅ | 1 | 0 | 2 | skipped: no CUDA device (2) |" in kernel
    assert "| quant_only | ⏭️ 1 skipped | 1/1 ✅ (+1 skipped) | 1/1 (+2 skipped) |" in kernel
    assert "| Kernel / pattern | output FP8 | output INT8 | Total |" in kernel
    assert "| quant_slide 2_8 | ⏭️ 1 skipped | ⏭️ 1 skipped | ⏭️ 2 skipped |" in kernel
    assert "| dequant_bias | ⏭️ 1 skipped | ⏭️ 1 skipped |" in kernel


def test_quant_section_tables_and_conclusions(results):
    build_reports("results", "out", gpu=[TAG], plots=False)
    text = (Path("out") / f"{TAG}.kernel.en.md").read_text(encoding="utf-8")
    heads = re.findall(r"^## (\d+)\. (.+)$", text, flags=re.M)
    assert [n for n, _ in heads] == ["1", "2", "3", "4", "5", "6"]
    assert heads[1:3] == [("2", "Speedups over dense"), ("3", "Quantization kernels")]
    section = text.split("## 3. Quantization kernels")[1].split("## 4. ")[0]
    assert "### BF16 → INT8" in section and "### INT32 → BF16" in section
    assert (
        "| Kernel / pattern | M | K | median µs (p25–p75) | GB/s | % of copy | × quant_only |"
        in (section)
    )
    assert "| quant_only | 4096 | 3584 | 40.00 (39.00–41.00) | 1,100 | 55.0 | - | - |" in section
    assert (
        "| quant_slide 2_8 | 4096 | 3584 | 50.00 (48.00–52.00) | 1,000 | 50.0 | 1.25 | 1.17 |"
        in (section)
    )
    # no spread or extra recorded: "-"; the failed quant_only fp8 cell is not listed
    assert "| quant_slide 2_8 | 1024 | 3584 | 12.00 | 900 | - | - | - |" in section
    assert "BF16 → FP8" not in section
    # dequant_bias is sized by N; its % of copy is derived from GB/s and the copy bandwidth
    assert "| Kernel / pattern | M | N | median µs (p25–p75) | GB/s | % of copy |\n" in section
    assert "| dequant_bias | 4096 | 3584 | 30.00 | 1,800 | 75.0 |" in section
    assert "‡" not in section
    assert (
        "- Quantization kernels BF16 → INT8 at M=4096: lowest share of the copy bandwidth 50.0% "
        "(quant_slide 2_8, K=3584); quant_slide latency over quant_only, worst against its "
        "ideal bytes ratio: 2_8 1.25× (ideal 1.17×, K=3584)." in text
    )
    build_reports("results", "out", gpu=[TAG], lang="zh", plots=False)
    zh = (Path("out") / f"{TAG}.kernel.zh.md").read_text(encoding="utf-8")
    assert [n for n in re.findall(r"^## (\d+)\. ", zh, flags=re.M)] == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
    ]
    assert "## 3. 量化 Kernel" in zh and "## 6. 结论" in zh
    assert "| dequant_bias | 4096 | 3584 | 30.00 | 1,800 | 75.0 |" in zh
    assert "占拷贝带宽最低 50.0%（quant_slide 2_8, K=3584）" in zh


def test_interpreter_quant_rows_are_labelled(cpu_results):
    build_reports("results", "out", plots=False)
    text = (Path("out") / f"{CPU}.kernel.en.md").read_text(encoding="utf-8")
    assert "| quant_only | 64 | 256 | 30,000.00 (29,000.00–31,000.00)‡ | - | - |" in text
    assert "‡ 1 row was timed in Triton's CPU interpreter" in text
    assert "Quantization kernels BF16" not in text  # no GPU figure: no conclusion from it


def test_no_quant_section_without_quant_cells(tmp_path):
    rows = [r for r in synthetic_rows() if r["task"] != "kernel-quant"]
    Store(tmp_path / "results").write_rows(TAG, rows, name="p")
    build_reports(tmp_path / "results", tmp_path / "out", plots=False)
    text = (tmp_path / "out" / f"{TAG}.kernel.en.md").read_text(encoding="utf-8")
    assert "Quantization" not in text
    assert "## 3. Failure details" in text and "## 5. Conclusions" in text


def test_cpu_header_reads_as_cpu_only(cpu_results):
    build_reports("results", "out", lang="en", plots=False)
    text = (Path("out") / f"{CPU}.kernel.en.md").read_text(encoding="utf-8")
    assert "**GPU**: none, CPU only (no CUDA device) · **machine tag**: `CPU_cc0" in text
    assert "compute capability" not in text
    build_reports("results", "out", lang="zh", plots=False)
    zh = (Path("out") / f"{CPU}.kernel.zh.md").read_text(encoding="utf-8")
    assert "仅 CPU（没有 CUDA 设备）" in zh


def test_numbers_in_the_kernel_report(results):
    build_reports("results", "out", gpu=[TAG], plots=False)
    text = (Path("out") / f"{TAG}.kernel.en.md").read_text(encoding="utf-8")
    # square int8 M=1024: dense 100 µs (cuBLASLt beats torch-builtin), 2_4 1.60x, 2_8 1.20x
    assert "| 1024 | 100.00 | 1.60 | 1.20 | 0.80 |" in text
    assert "| 64 | 9.00 | (3.00)† |" in text  # above 2.00·1.03: flagged, not a result
    assert "| 4096 | 40.00 | 1.50 | 1.25 |" in text  # Qwen2.5-7B total of four layers
    # a quant row with no error class or message: "-", never None
    assert "| 1 | - | bf16 | 1024 | quant_only | - | error | - |" in text
    assert "| kernel-gemm · cublaslt · square | ✅ | 3 | 0 | 2 | skipped: no dense fp4 GEMM" in text
    e2e = (Path("out") / f"{TAG}.e2e.en.md").read_text(encoding="utf-8")
    assert "all 3 failures: Qwen2.5-7B, INT8, M=65536, every backend, every pattern" in e2e
    # a cell both measured and skipped, and a memory skip stated per model
    assert "| cublaslt | 3/3 ✅ | 2/3 ⚠️ | 1/1 ✅ (+1 skipped) | 6/7 (+1 skipped) |" in e2e
    assert "all 3 cells skipped: Qwen2.5-14B, M=65536, every backend, every pattern: " in e2e
    assert "predicted memory 75.3 GiB" in e2e
    assert "cap M at 32768 for Qwen2.5-7B" in e2e
    assert "| Qwen2.5-7B | int8 | 65536 | cublaslt | - | cuda_illegal_address |" in e2e


def test_chinese_report_is_chinese(results):
    build_reports("results", "out", gpu=[TAG], lang="zh", plots=False)
    text = (Path("out") / f"{TAG}.e2e.zh.md").read_bytes().decode("utf-8")
    assert "端到端 Benchmark 报告" in text and "失败详情" in text and "全部 3 个失败" in text


def test_plots_are_written_and_linked(results):
    build_reports("results", "out", gpu=[TAG], plots=True)
    text = (Path("out") / f"{TAG}.kernel.en.md").read_text(encoding="utf-8")
    png = Path("out") / f"{TAG}.kernel.int8.png"
    assert f"]({png.name})" in text
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000


def test_cross_gpu_heatmap(results):
    build_reports("results", "out", plots=True)
    text = (Path("out") / "cross_gpu.en.md").read_text(encoding="utf-8")
    assert "(cross_gpu.square.int8.png)" in text
    assert (Path("out") / "cross_gpu.square.int8.png").stat().st_size < 200_000


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_empty_store_says_so(tmp_path, lang):
    (tmp_path / "results").mkdir()
    (path,) = build_reports(tmp_path / "results", tmp_path / "out", lang=lang)
    text = path.read_text(encoding="utf-8")
    assert ("holds no result rows" in text) if lang == "en" else ("没有任何结果行" in text)


def test_all_failed_store_says_so(tmp_path):
    rows = [
        {**r, "status": "failed", "error_class": "oom", "latency_us": None, "tokens_per_s": None}
        for r in synthetic_rows()
    ]
    Store(tmp_path / "results").write_rows(TAG, rows, name="p")
    paths = build_reports(tmp_path / "results", tmp_path / "out", plots=True)
    kernel = (tmp_path / "out" / f"{TAG}.kernel.en.md").read_text(encoding="utf-8")
    assert "No cell succeeded on this GPU" in kernel
    assert "No speedup can be computed" in kernel
    e2e = (tmp_path / "out" / f"{TAG}.e2e.en.md").read_text(encoding="utf-8")
    assert "No run succeeded on this GPU" in e2e
    assert len(paths) == 2


def test_unknown_gpu_and_language_are_user_errors(results):
    with pytest.raises(UserError, match="no results for GPU tag 'A100"):
        build_reports("results", "out", gpu=["A100_cc80_py312_cu129_x86_64"])
    with pytest.raises(UserError, match="unknown report language"):
        build_reports("results", "out", lang="fr")


def test_cli_report_and_import_legacy(results, capsys):
    assert main(["report", "results", "--out", "out", "--no-plots", "--gpu", TAG]) == 0
    assert f"{TAG}.kernel.en.md" in capsys.readouterr().out
    assert main(["report", "results", "--gpu", "nope"]) == 2
    assert main(["import-legacy", "does-not-exist", "--results", "r2"]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.parametrize(("lang", "title"), [("en", "Data problems"), ("zh", "数据问题")])
def test_unreadable_files_are_named_in_the_report_and_left_in_place(tmp_path, lang, title):
    store = Store(tmp_path / "results")
    store.write_rows(TAG, synthetic_rows(), name="good")
    bad = store.tag_dir(TAG) / "parts" / "bad.parquet"
    bad.write_bytes(b"PAR1 not a parquet file")
    with pytest.warns(StoreWarning, match="skipped unreadable .*bad.parquet"):
        paths = build_reports(tmp_path / "results", tmp_path / "out", lang=lang, plots=False)
    assert bad.exists()  # reading never moves a file
    for path in paths:
        text = path.read_text(encoding="utf-8")
        assert title in text and "bad.parquet" in text, path.name


def test_figures_are_wide_with_suspects_marked_and_cpu_labelled(tmp_path, monkeypatch):
    from PIL import Image

    from slidesparse.report import plots

    labelled = {}
    real = plots.speedup_vs_m
    monkeypatch.setattr(
        plots,
        "speedup_vs_m",
        lambda panels, path, title, cpu: (
            labelled.setdefault(Path(path).name[:4], set()).add(cpu)
            or real(panels, path, title, cpu=cpu)
        ),
    )
    store = Store(tmp_path / "results")
    store.write_rows(TAG, synthetic_rows(), name="gpu")
    store.write_rows(CPU, cpu_smoke_rows(), name="cpu")
    paths = build_reports(tmp_path / "results", tmp_path / "out", plots=True)
    pngs = sorted((tmp_path / "out").glob("*.png"))
    assert pngs and all(Image.open(p).size[0] >= 1200 for p in pngs)
    assert labelled == {"CPU_": {True}, TAG[:4]: {False}}  # CPU figures say so in their title
    cross = next(p for p in paths if p.name == "cross_gpu.en.md").read_text(encoding="utf-8")
    # The CPU tag is listed as a machine, never counted among the GPUs.
    assert cross.startswith("# Cross-GPU SlideSparse report")
    assert "1 GPUs:" in cross and "1 machine(s) without a GPU" in cross and CPU in cross


def test_suspect_points_are_drawn_apart(tmp_path, monkeypatch):
    from slidesparse.report import plots

    drawn = []
    real = plots.speedup_vs_m
    monkeypatch.setattr(
        plots, "speedup_vs_m", lambda panels, *a, **k: drawn.extend(panels) or real(panels, *a, **k)
    )
    Store(tmp_path / "results").write_rows(TAG, synthetic_rows(), name="p")
    build_reports(tmp_path / "results", tmp_path / "out", plots=True)
    suspect = [pt for p in drawn for pts in p["suspect"].values() for pt in pts]
    lines = [pt for p in drawn for pts in p["series"].values() for pt in pts]
    assert suspect and not set(suspect) & set(lines)


@pytest.mark.parametrize(
    ("lang", "word"), [("en", "Incomplete model totals"), ("zh", "不完整的模型总计")]
)
def test_incomplete_model_totals_are_listed_with_their_missing_layer(tmp_path, lang, word):
    rows = [r for r in synthetic_rows() if not (r.get("layer") == "down" and r["M"] == 1024)]
    Store(tmp_path / "results").write_rows(TAG, rows, name="p")
    build_reports(tmp_path / "results", tmp_path / "out", lang=lang, plots=False)
    text = (tmp_path / "out" / f"{TAG}.kernel.{lang}.md").read_text(encoding="utf-8")
    assert word in text and "M = 1024" in text and "down" in text.split(word)[1].split("\n")[0]


@pytest.fixture
def engine_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store("results")
    store.write_rows(ENGINE_TAG, engine_rows(), name="part-0")
    store.write_machine(ENGINE_TAG, {**_machine(ENGINE_TAG), "gpu_name": "NVIDIA H200"})
    return store


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_engine_report_matches_golden(engine_results, lang):
    paths = build_reports("results", "out", lang=lang, plots=False)
    _check_golden([p for p in paths if ".e2e." in p.name])


def test_engine_rows_are_compared_only_with_the_engine(engine_results):
    build_reports("results", "out", lang="en", plots=True)
    text = (Path("out") / f"{ENGINE_TAG}.e2e.en.md").read_text(encoding="utf-8")
    assert "### e2e-prefill · INT8 · slidesparse engine" in text
    assert "Engine: slidesparse-engine 0.1.0 (bf16, bf16); slidesparse-engine 0.1.0" in text
    # engine: 2_4 and 2_8 over the engine's dense W8A8; bf16 engine as the reference
    assert "| 4096 | 70,000 | 1.25 | 0.95 |" in text
    assert "| 4096 | 38,500 | 2.27 | 1.73 |" in text  # over the bf16 engine
    # the imported vLLM pair stays in its own section, over its own cuBLASLt row
    assert "### e2e-prefill · INT8\n" in text and "| 4096 | 50,000 | 1.04 |" in text
    # kernel gain kept end to end: 1.25 e2e vs 1.45 matrix total, 1.40 engine GEMMs alone,
    # 80% linear share -> Amdahl 1 / (0.2 + 0.8 / 1.45) = 1.33
    assert "| Qwen2.5-7B | 4096 | 2_4 | 1.25 | 1.45 | 1.40 | 86% | 80% | 1.33 |" in text
    # where the kernel matrix has no M, the engine's own GEMM timings stand in
    assert "| Qwen2.5-7B | 16384 | 2_4 | 1.25 | - | 1.40 | 89% | 80% | 1.30 |" in text
    assert (Path("out") / f"{ENGINE_TAG}.e2e.prefill.int8.engine.png").is_file()
    assert (Path("out") / f"{ENGINE_TAG}.e2e.prefill.int8.png").is_file()
