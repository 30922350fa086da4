"""``bench e2e`` end to end on the tiny model (CPU: the code path; GPU: real numbers)."""

import json

import pytest
import torch
from engine_tiny import write_tiny


@pytest.mark.slow
def test_bench_e2e_cli_writes_rows(tmp_path, capsys):
    from slidesparse.cli import main

    folder = write_tiny(tmp_path / "m", "llama")
    out = tmp_path / "rows.jsonl"
    rc = main(
        [
            "bench",
            "e2e",
            "--model",
            str(folder),
            "--dtype",
            "int8",
            "--sparsity",
            "dense,2_8",
            "--prefill-M",
            "32",
            "--decode-M",
            "2",
            "--decode-steps",
            "2",
            "--repeats",
            "1",
            "--warmup",
            "1",
            # CPU timings of a tiny model are noise: stop as soon as two samples agree
            "--target-spread",
            "0.9",
            "--no-bf16",
            "--json-out",
            str(out),
        ]
    )
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["sparsity"], r["phase"]) for r in rows] == [
        ("dense", "prefill"),
        ("dense", "decode"),
        ("2_8", "prefill"),
        ("2_8", "decode"),
    ]
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["speedup_vs_dense"] is not None
        # CPU timings of the tiny GEMMs are noise: a kernel speedup above L/(L-2) is flagged
        # suspect (kept as *_raw, not reported), never a result.
        ks = r["kernel_speedup"] if r["kernel_speedup"] is not None else r["kernel_speedup_raw"]
        assert ks > 0 and r["linear_share"] > 0
        if r["kernel_speedup"] is None:
            assert r["kernel_speedup_suspect"] and r["sparsity"] != "dense"
    assert rows[0]["batch"] == 1 and rows[0]["seq_len"] == 32
    assert "vs dense" in capsys.readouterr().out


def test_prefill_shape():
    from slidesparse.engine.bench import prefill_shape

    assert prefill_shape(16384) == (16, 1024)
    assert prefill_shape(512) == (1, 512)
    assert prefill_shape(1500) == (2, 1024)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_e2e_gpu_small(tmp_path):
    """A short real run at Llama3.2-1B shapes: rows come back with sane numbers."""
    from slidesparse.engine.bench import E2EPlan, run_e2e

    plan = E2EPlan(
        model="Llama3.2-1B",
        dtypes=("int8",),
        sparsities=("dense", "2_8"),
        Ms={"prefill": (2048,), "decode": (16,)},
        repeats=3,
        warmup=2,
        decode_steps=8,
        bf16=True,
    )
    rows = run_e2e(plan)
    assert len(rows) == 6
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["peak_mem_gb"] > 0
        # linears alone are timed as the step runs them (a CUDA graph at decode), so their
        # share of the step cannot pass 100% by more than timing noise
        assert 0 < r["gemm_share"] <= r["linear_share"] * 1.05 and r["linear_share"] < 1.05
        if r["sparsity"] == "2_8":
            assert r.get("kernel_speedup_suspect") is None, r


@pytest.mark.slow
@pytest.mark.parametrize("phase,M", [("prefill", 48), ("decode", 2)])
def test_matrix_cell_row_is_a_store_row_with_the_seeds_semantics(tmp_path, phase, M, monkeypatch):
    from slidesparse.engine import build_engine
    from slidesparse.engine.sizing import CELL_TIMING
    from slidesparse.results.store import normalize_row
    from slidesparse.tasks.e2e import engine_row

    # the cell's own repeats, each timing capped short: CPU timings only exercise the path
    monkeypatch.setitem(CELL_TIMING, phase, {**CELL_TIMING[phase], "max_s": 0.05})
    folder = write_tiny(tmp_path / "m", "qwen2")
    eng = build_engine(folder, "slidesparse", dtype="int8", sparsity="2_8", device="cpu")
    row = engine_row(eng, phase, M, "cpu", new_tokens=4, target_spread=0.02)
    normalize_row(
        {**row, "task": f"e2e-{phase}", "status": "ok", "dtype": "int8", "sparsity": "2_8"}
    )
    assert row["backend"] == "engine" and row["mode"] == phase and row["M"] == M
    assert row["kernel"].startswith("slidesparse-engine ") and "slidesparse" in row["kernel"]
    assert row["tokens_per_s"] > 0 and row["latency_p25_us"] <= row["latency_p75_us"]
    assert row["n_samples"] >= CELL_TIMING[phase]["repeats"]
    assert row["spread_met"] == (row["latency_spread"] <= 0.02)
    extra = row["extra"]
    assert extra["target_spread"] == 0.02
    assert extra["linear_share"] > 0 and extra["kernel_gemm_s"] > 0
    assert extra["engine"]["linear"] == "slidesparse" and extra["engine"]["cuda_graphs"] is False
    if phase == "prefill":  # M tokens as ceil(M/1024) sequences
        assert (row["max_num_seqs"], row["prompt_len"], row["output_len"]) == (1, 48, 1)
        assert row["tokens_per_s"] == pytest.approx(48 / (row["latency_us"] * 1e-6))
    else:  # M sequences, a 16-token prompt, new_tokens each, timed as whole requests
        assert (row["max_num_seqs"], row["prompt_len"], row["output_len"]) == (2, 16, 4)
        assert row["tokens_per_s"] == pytest.approx(2 * (16 + 4) / row["elapsed_s"])
