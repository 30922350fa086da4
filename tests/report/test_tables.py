"""Analysis rules on hand-built cells: speedups, totals, efficiencies, pass tables, failures."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from synthetic_rows import CPU, QWEN7, T0, TAG, TAG2, _row, cpu_smoke_rows, synthetic_rows  # noqa: F401

from slidesparse.report import failures, frames, speedups
from slidesparse.results.store import rows_to_table, to_frame


def frame_of(rows: list[dict]) -> pd.DataFrame:
    return frames.plain(to_frame(rows_to_table(rows)))


@pytest.fixture(scope="module")
def cells():
    return frames.resolve_cells(frame_of(synthetic_rows()))


def test_dense_baseline_is_fastest_dense_backend(cells):
    sp = speedups.kernel_speedups(cells)
    sq = sp[(sp["mode"] == "square") & (sp["M"] == 1024)].set_index("sparsity")
    assert set(sq["dense_backend"]) == {"cublaslt"}
    assert sq.loc["2_4", "speedup"] == pytest.approx(1.6)
    assert sq.loc["2_inf", "speedup"] == pytest.approx(0.8)
    assert not sq["suspect"].any()


def test_speedup_above_bound_is_suspect(cells):
    sp = speedups.kernel_speedups(cells)
    row = sp[(sp["M"] == 64) & (sp["sparsity"] == "2_4")].iloc[0]
    assert row["speedup"] == pytest.approx(3.0)
    assert bool(row["suspect"])


def test_model_totals_need_all_four_layers(cells):
    sp = speedups.kernel_speedups(cells)
    totals = speedups.model_totals(sp)
    t = totals[(totals["M"] == 4096) & (totals["sparsity"] == "2_8")].iloc[0]
    assert t["dense_latency_us"] == pytest.approx(40.0)
    assert t["speedup"] == pytest.approx(1.25)
    three = sp[~((sp["layer"] == "down") & (sp["M"] == 1024))]
    assert set(speedups.model_totals(three)["M"]) == {4096}


def _paired_extra(speedup, lo, hi, dense_backend="cublaslt") -> dict:
    return {"speedup_vs_dense": speedup, "speedup_lo": lo, "speedup_hi": hi,
            "dense_latency_us": 10.0, "dense_backend": dense_backend}  # fmt: skip


def test_interleaved_speedups_and_their_intervals_are_used():
    k = dict(task="kernel-gemm", dtype="int8", mode="model", model="Qwen2.5-7B", M=4096)
    rows, i = [], 0
    for layer, (n, kk) in QWEN7.items():
        shape = dict(k, layer=layer, N=n, K=kk)
        rows.append(_row(i, **shape, backend="cublaslt", sparsity="dense", latency_us=10.0))
        # the layers' own paired speedups differ from the ratios of the two rows' medians
        extra = _paired_extra(1.3, 1.2, 1.4) if layer != "o" else _paired_extra(1.0, 0.9, 1.1)
        rows.append(_row(i + 1, **shape, backend="cusparselt", sparsity="2_4", latency_us=8.0,
                         extra=extra))  # fmt: skip
        # paired with another dense backend than the baseline: the plain ratio, no interval
        rows.append(_row(i + 2, **shape, backend="cusparselt", sparsity="2_8", latency_us=8.0,
                         extra=_paired_extra(1.2, 1.1, 1.3, "torch-builtin")))  # fmt: skip
        i += 3
    sp = speedups.kernel_speedups(frames.resolve_cells(frame_of(rows))).set_index(
        ["layer", "sparsity"]
    )
    assert sp.loc[("qkv", "2_4"), ["speedup", "speedup_lo", "speedup_hi"]].tolist() == [
        1.3, 1.2, 1.4
    ]  # fmt: skip
    assert bool(sp.loc[("o", "2_4"), "noise"]) and not bool(sp.loc[("qkv", "2_4"), "noise"])
    assert sp.loc[("qkv", "2_8"), "speedup"] == pytest.approx(10 / 8)
    assert pd.isna(sp.loc[("qkv", "2_8"), "speedup_lo"]) and not sp.loc[("qkv", "2_8"), "noise"]
    totals = speedups.model_totals(sp.reset_index()).set_index("sparsity")
    # equal dense latencies: the total is the harmonic mean of the layers' speedups
    assert totals.loc["2_4", "speedup"] == pytest.approx(4 / (3 / 1.3 + 1 / 1.0))
    assert totals.loc["2_4", "speedup_lo"] == pytest.approx(4 / (3 / 1.2 + 1 / 0.9))
    assert totals.loc["2_4", "speedup_hi"] == pytest.approx(4 / (3 / 1.4 + 1 / 1.1))
    assert totals.loc["2_8", "speedup"] == pytest.approx(40 / 32)
    assert pd.isna(totals.loc["2_8", "speedup_lo"])


def test_efficiency_formula(cells):
    sp = speedups.kernel_speedups(cells)
    eff = speedups.efficiencies(sp[sp["mode"] == "square"], ["gpu_tag", "M", "N", "K"])
    e = eff[(eff["M"] == 1024)].set_index("sparsity")["efficiency"]
    assert e["2_4"] == pytest.approx(1.0)
    assert e["2_8"] == pytest.approx((1.2 / 1.6) / (0.5 * 8 / 6))
    assert e["2_inf"] == pytest.approx((0.8 / 1.6) / 0.5)


def test_e2e_speedups(cells):
    e = speedups.e2e_speedups(cells)
    got = e[(e["model"] == "Llama3.2-1B") & (e["M"] == 512)].set_index("sparsity")["speedup"]
    assert got["2_4"] == pytest.approx(1.3)
    assert got["2_8"] == pytest.approx(1.1)
    assert 65536 not in set(e[e["model"] == "Qwen2.5-7B"]["M"])


def test_latest_ok_row_wins():
    rows = synthetic_rows()[:1]
    later_fail = {
        **rows[0],
        "row_id": "x1",
        "status": "failed",
        "error_class": "timeout",
        "latency_us": None,
        "started_at": T0 + timedelta(days=1),
    }
    later_ok = {
        **rows[0],
        "row_id": "x2",
        "latency_us": 42.0,
        "started_at": T0 + timedelta(hours=1),
    }
    cells = frames.resolve_cells(frame_of([*rows, later_fail, later_ok]))
    assert len(cells) == 1
    assert cells.iloc[0]["row_id"] == "x2"


def test_pass_counts(cells):
    p = failures.pass_counts(cells, ["e2e-prefill"])
    q = p[(p["model"] == "Qwen2.5-7B") & (p["variant"] == "cusparselt 2_8")].iloc[0]
    assert (q["ok"], q["total"]) == (2, 3)
    assert frames.order_variants(["cusparselt 2_10", "cublaslt", "cusparselt 2_4", "cutlass"]) == [
        "cutlass",
        "cublaslt",
        "cusparselt 2_4",
        "cusparselt 2_10",
    ]


def test_failure_mining_states_the_common_factor(cells):
    groups = failures.failure_groups(cells)
    # the quant_slide timeout was retried and passed: only quant_only stays failed
    assert [(g["task"], g["n"]) for g in groups] == [("e2e-prefill", 3), ("kernel-quant", 1)]
    g = groups[0]
    assert g["n"] == 3 and g["exclusive"]
    assert dict(g["factors"]) == {"model": "Qwen2.5-7B", "dtype": "int8", "M": 65536}
    assert set(g["every"]) == {"backend", "sparsity"}
    assert g["recommendation"] == {
        "kind": "cap_m",
        "model": "Qwen2.5-7B",
        "max_m": 32768,
        "first_bad": 65536,
    }
    assert g["hints"][0]["kind"] == "int32" and g["hints"][0]["elems"] == 65536 * 37888


def test_failure_mining_model_that_never_ran():
    rows = [
        _row(
            i,
            task="e2e-prefill",
            mode="prefill",
            dtype="int8",
            model="Qwen2.5-14B",
            backend="cublaslt",
            sparsity="dense",
            M=m,
            status="failed",
            error_class="oom",
        )
        for i, m in enumerate((512, 1024, 2048))
    ]
    rows.append(
        _row(
            9,
            task="e2e-prefill",
            mode="prefill",
            dtype="int8",
            model="Llama3.2-1B",
            backend="cublaslt",
            sparsity="dense",
            M=512,
            tokens_per_s=5.0,
        )
    )
    (g,) = failures.failure_groups(frames.resolve_cells(frame_of(rows)))
    assert g["recommendation"] == {"kind": "skip_model", "model": "Qwen2.5-14B"}
    assert g["hints"][0]["kind"] == "weights" and g["hints"][0]["bytes"] > 10 * 2**30
    assert g["every"] == ["M"]


def test_failure_mining_threshold_in_m():
    rows, i = [], 0
    for m in (512, 1024, 2048, 4096):
        for p, limit in (("2_4", 2048), ("2_8", 1024)):
            bad = m >= limit
            rows.append(
                _row(
                    i,
                    task="e2e-prefill",
                    mode="prefill",
                    dtype="int8",
                    model="Qwen2.5-7B",
                    backend="cusparselt",
                    sparsity=p,
                    M=m,
                    status="failed" if bad else "ok",
                    error_class="oom" if bad else None,
                    tokens_per_s=None if bad else 1.0,
                )
            )
            i += 1
    (g,) = failures.failure_groups(frames.resolve_cells(frame_of(rows)))
    assert g["recommendation"]["kind"] == "cap_m" and g["recommendation"]["max_m"] == 512
    assert g["values"]["M"] == [1024, 2048, 4096]


def test_quant_rows_are_named_by_kernel_and_resolve_to_one_cell(cells):
    q = cells[(cells["task"] == "kernel-quant") & (cells["M"] == 1024)].set_index("kernel")
    assert sorted(q.index) == ["quant_only", "quant_slide"]  # the failed try + the ok one: 1
    assert q.loc["quant_slide", "status"] == "ok"
    assert set(q["backend"]) == {"quant_only", "quant_slide"} and set(q["mode"]) == {"quant"}
    (g,) = [g for g in failures.failure_groups(cells) if g["task"] == "kernel-quant"]
    assert dict(g["factors"])["backend"] == "quant_only"
    assert g["error_class"] == "error" and g["message"] is None


def test_pass_counts_keep_skipped_cells_apart(cells):
    p = failures.pass_counts(cells, ["kernel-gemm", "e2e-prefill", "kernel-quant"])
    fp4 = p[p["dtype"] == "fp4"]
    assert set(fp4["ok"]) == {0} and set(fp4["measured"]) == {0} and set(fp4["skipped"]) == {2}
    q14 = p[(p["model"] == "Qwen2.5-14B") & (p["variant"] == "cublaslt")].iloc[0]
    assert (q14["ok"], q14["measured"], q14["skipped"], q14["total"]) == (1, 1, 1, 2)
    quant = p[(p["task"] == "kernel-quant") & (p["dtype"] == "bf16")]
    quant = quant[quant["variant"] != "quant_only"].set_index("variant")
    assert quant.loc["quant_slide 2_8", "column"] == "int8"  # quant columns: output dtype
    only = p[(p["task"] == "kernel-quant") & (p["variant"] == "quant_only")]
    assert sorted(zip(only["column"], only["ok"], strict=True)) == [("fp8", 0), ("int8", 1)]


def test_variant_labels_never_print_null():
    assert frames.variant(None, "2_8") == "- 2_8"
    assert frames.variant(float("nan"), None) == "-"
    assert frames.variant("cublaslt", "dense") == "cublaslt"
    assert not frames.present(pd.NA) and not frames.present("") and frames.present(0)


def test_skip_groups_state_the_reason(cells):
    groups = {g["message"]: g for g in failures.skip_groups(cells)}
    fp4 = groups["no dense fp4 GEMM on cc 9.0 (needs cc >= 10.0)"]
    assert fp4["n"] == 2 and dict(fp4["factors"])["dtype"] == "fp4"
    assert fp4["every"] == [] and fp4["values"] == {}  # one message says it all
    (mem,) = [g for g in groups.values() if g["message"].startswith("predicted memory")]
    # per model, the smallest cell's prediction first, the sizes that were skipped stated
    assert mem["n"] == 3 and mem["messages"] == 3 and mem["exclusive"]
    assert dict(mem["factors"]) == {"model": "Qwen2.5-14B", "M": 65536}  # all cells are int8
    assert set(mem["every"]) == {"backend", "sparsity"}
    assert "75.3 GiB" in mem["message"] and mem["recommendation"] is None
    assert (
        failures.reason_key("predicted memory 75.3 GiB (80 bytes)")
        == "predicted memory # GiB (# bytes)"
    )


def test_quant_rows_carry_extra_figures(cells):
    q = speedups.quant_rows(cells[cells["gpu_tag"] == TAG])
    # ok rows only (the failed quant_only fp8 cell is left out), quant_only first
    assert list(zip(q["kernel"], q["M"], q["size_name"], strict=True)) == [
        ("quant_only", 4096, "K"),
        ("quant_slide", 1024, "K"),
        ("quant_slide", 4096, "K"),
        ("dequant_bias", 4096, "N"),
    ]
    assert set(q["size"]) == {3584}
    slide = q[(q["kernel"] == "quant_slide") & (q["M"] == 4096)].iloc[0]
    assert (slide["pct_of_copy"], slide["ratio_vs_quant_only"]) == (50.0, 1.25)
    assert slide["ideal_ratio"] == pytest.approx(1.1666)
    deq = q[q["kernel"] == "dequant_bias"].iloc[0]
    assert deq["pct_of_copy"] == pytest.approx(75.0)  # 1800 / 2400 GB/s, derived
    assert not q["interpreter"].any()


def test_quant_findings_at_the_largest_m(cells):
    found = {
        (f["dtype"], f["out_dtype"]): f for f in speedups.quant_findings(speedups.quant_rows(cells))
    }
    f = found[("bf16", "int8")]
    assert (f["M"], f["low_pct"], f["low_at"]) == (4096, 50.0, "quant_slide 2_8, K=3584")
    (r,) = f["ratios"]
    assert (r["sparsity"], r["ratio"], r["at"]) == ("2_8", 1.25, "K=3584")
    d = found[("int32", "bf16")]
    assert d["low_at"] == "dequant_bias, N=3584" and d["ratios"] == []


def test_interpreter_quant_rows_have_no_bandwidth():
    q = speedups.quant_rows(frames.resolve_cells(frame_of(cpu_smoke_rows())))
    (r,) = q.itertuples()  # the only ok quant row: timed in the interpreter
    assert r.interpreter and r.latency_us == 30000.0
    assert all(pd.isna(v) for v in (r.gbps, r.copy_gbps, r.pct_of_copy))
    assert speedups.quant_findings(q) == []  # no GPU figure, nothing to conclude


def test_backend_wins_counts_only_shapes_run_on_several_backends():
    import pandas as pd

    from slidesparse.report.speedups import backend_wins

    def row(backend, sparsity, lat, M=16):
        return dict(task="kernel-gemm", status="ok", gpu_tag="g", mode="square", model=None,
                    layer=None, dtype="fp8", M=M, N=M, K=M, sparsity=sparsity,
                    backend=backend, latency_us=lat)  # fmt: skip

    cells = pd.DataFrame(
        [
            row("cublaslt", "dense", 10.0), row("cutlass", "dense", 8.0),
            row("cublaslt", "dense", 10.0, M=32), row("cutlass", "dense", 12.5, M=32),
            row("cublaslt", "dense", 5.0, M=64),  # one backend only: not compared
            row("cusparselt", "2_4", 6.0), row("cutlass-sparse", "2_4", 7.5),
        ]
    )  # fmt: skip
    w = backend_wins(cells).set_index(["side", "backend"])
    assert (w.loc[("dense", "cutlass"), "won"], w.loc[("dense", "cutlass"), "of"]) == (1, 2)
    assert w.loc[("dense", "cublaslt"), "won"] == 1
    assert w.loc[("dense", "cutlass"), "vs_best"] == pytest.approx((0.8 + 1.25) / 2)
    assert w.loc[("2_4", "cusparselt"), "vs_best"] == pytest.approx(0.8)
    assert w.loc[("2_4", "cutlass-sparse"), "won"] == 0
