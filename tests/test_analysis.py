"""Analysis rules on hand-built cells: speedups, totals, efficiencies, pass tables, failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from slidesparse import analysis as A
from slidesparse.store import rows_to_table, to_frame

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TAG = "H100_cc90_py312_cu129_x86_64"
TAG2 = "B200_cc100_py312_cu129_x86_64"
QWEN7 = {"qkv": (4608, 3584), "o": (3584, 3584), "gate_up": (37888, 3584), "down": (3584, 18944)}


def _row(i: int, **kw) -> dict:
    row = {
        "row_id": f"r{i:05d}",
        "run_id": "run-1",
        "cell_id": f"c{i:05d}",
        "gpu_tag": TAG,
        "status": "ok",
        "started_at": T0 + timedelta(seconds=i),
        "duration_s": 1.5,
    }
    row.update(kw)
    return row


def synthetic_rows(tag: str = TAG, scale: float = 1.0) -> list[dict]:
    """A small store: square and Qwen2.5-7B kernel rows, prefill e2e rows with failures."""
    rows, i = [], 0

    def add(**kw):
        nonlocal i
        rows.append(_row(i, gpu_tag=tag, row_id=f"{tag[:4]}{i:05d}", **kw))
        i += 1

    k = dict(task="kernel-gemm", dtype="int8")
    for m in (1024, 4096):
        # two dense backends: the faster one is the baseline
        add(
            **k,
            mode="square",
            backend="cublaslt",
            sparsity="dense",
            M=m,
            N=m,
            K=m,
            latency_us=100.0 * scale * m / 1024,
        )
        add(
            **k,
            mode="square",
            backend="torch-builtin",
            sparsity="dense",
            M=m,
            N=m,
            K=m,
            latency_us=120.0 * scale * m / 1024,
        )
        for p, s in (("2_4", 1.6), ("2_8", 1.2), ("2_inf", 0.8)):
            add(
                **k,
                mode="square",
                backend="cusparselt",
                sparsity=p,
                M=m,
                N=m,
                K=m,
                latency_us=100.0 * scale * m / 1024 / s,
            )
        for layer, (n, kk) in QWEN7.items():
            add(
                **k,
                mode="model",
                model="Qwen2.5-7B",
                layer=layer,
                backend="cublaslt",
                sparsity="dense",
                M=m,
                N=n,
                K=kk,
                latency_us=10.0 * scale,
            )
            for p, s in (("2_4", 1.5), ("2_8", 1.25)):
                add(
                    **k,
                    mode="model",
                    model="Qwen2.5-7B",
                    layer=layer,
                    backend="cusparselt",
                    sparsity=p,
                    M=m,
                    N=n,
                    K=kk,
                    latency_us=10.0 * scale / s,
                )
    # a speedup above the 2_4 bound: the dense baseline is suspect
    add(**k, mode="square", backend="cublaslt", sparsity="dense", M=64, N=64, K=64, latency_us=9.0)
    add(**k, mode="square", backend="cusparselt", sparsity="2_4", M=64, N=64, K=64, latency_us=3.0)
    e = dict(task="e2e-prefill", mode="prefill", dtype="int8")
    for model in ("Llama3.2-1B", "Qwen2.5-7B"):
        for m in (512, 32768, 65536):
            failing = model == "Qwen2.5-7B" and m == 65536
            for backend, p, tok in (
                ("cublaslt", "dense", 1000.0),
                ("cusparselt", "2_4", 1300.0),
                ("cusparselt", "2_8", 1100.0),
            ):
                if failing:
                    add(
                        **e,
                        model=model,
                        backend=backend,
                        sparsity=p,
                        M=m,
                        status="failed",
                        error_class="cuda_illegal_address",
                        error_message="CUDA error: an illegal memory access was encountered",
                    )
                else:
                    add(
                        **e,
                        model=model,
                        backend=backend,
                        sparsity=p,
                        M=m,
                        tokens_per_s=tok * scale,
                        requests_per_s=1.0,
                        elapsed_s=2.0,
                    )
    # kernel-quant: named by kernel. The runner's row for a failure has no backend and mode
    # "quant", the task's measured row says backend "triton", mode "kernel": one cell.
    q = dict(task="kernel-quant", dtype="bf16", M=1024, K=3584)
    add(
        **q,
        mode="quant",
        kernel="quant_slide",
        sparsity="2_8",
        out_dtype="int8",
        status="failed",
        error_class="timeout",
        error_message="cell exceeded 300 s",
    )
    add(
        **q,
        mode="kernel",
        backend="triton",
        kernel="quant_slide",
        sparsity="2_8",
        out_dtype="int8",
        latency_us=12.0 * scale,
        gbps=900.0,
    )
    # a failure that recorded neither an error class nor a message
    add(**q, mode="quant", kernel="quant_only", sparsity="dense", out_dtype="fp8", status="failed")
    # measured quant rows as the task writes them: bandwidth figures in extra
    q = dict(task="kernel-quant", mode="quant", backend="triton", M=4096, timer="cuda_event")
    add(
        **q,
        kernel="quant_only",
        sparsity="dense",
        dtype="bf16",
        out_dtype="int8",
        K=3584,
        latency_us=40.0 * scale,
        latency_p25_us=39.0 * scale,
        latency_p75_us=41.0 * scale,
        gbps=1100.0 / scale,
        extra={"copy_gbps": 2000.0 / scale, "pct_of_copy": 55.0},
    )
    add(
        **q,
        kernel="quant_slide",
        sparsity="2_8",
        dtype="bf16",
        out_dtype="int8",
        K=3584,
        K_slide=5376,
        latency_us=50.0 * scale,
        latency_p25_us=48.0 * scale,
        latency_p75_us=52.0 * scale,
        gbps=1000.0 / scale,
        extra={
            "copy_gbps": 2000.0 / scale,
            "pct_of_copy": 50.0,
            "ratio_vs_quant_only": 1.25,
            "ideal_ratio": 1.1666,
        },
    )
    # no pct_of_copy recorded: derived from gbps and the copy bandwidth of the same worker
    add(
        **q,
        kernel="dequant_bias",
        sparsity="dense",
        dtype="int32",
        out_dtype="bf16",
        N=3584,
        latency_us=30.0 * scale,
        gbps=1800.0 / scale,
        extra={"copy_gbps": 2400.0 / scale},
    )
    if "cc90" in tag:
        # dtypes this compute capability lacks: skipped, never failures
        for backend, p, what in (
            ("cublaslt", "dense", "dense"),
            ("cusparselt", "2_4", "2:4 sparse"),
        ):
            for m in (1024, 4096):
                add(
                    **{**k, "dtype": "fp4"},
                    mode="square",
                    backend=backend,
                    sparsity=p,
                    M=m,
                    N=m,
                    K=m,
                    status="skipped",
                    error_class="unsupported",
                    error_message=f"no {what} fp4 GEMM on cc 9.0 (needs cc >= 10.0)",
                )
        # a memory prediction: the message differs per cell, the reason does not
        for backend, p, tok, gib in (
            ("cublaslt", "dense", 400.0, 75.3),
            ("cusparselt", "2_4", 520.0, 75.9),
            ("cusparselt", "2_8", 440.0, 77.2),
        ):
            add(
                **e,
                model="Qwen2.5-14B",
                backend=backend,
                sparsity=p,
                M=512,
                tokens_per_s=tok,
                requests_per_s=1.0,
            )
            add(
                **e,
                model="Qwen2.5-14B",
                backend=backend,
                sparsity=p,
                M=65536,
                status="skipped",
                error_class="unsupported",
                error_message=f"predicted memory {gib} GiB ({int(gib * 2**30)} bytes) "
                "exceeds usable 73.6 GiB of 80.0 GiB",
            )
    return rows


CPU = "CPU_cc0_py311_cpu_x86_64"


def cpu_smoke_rows() -> list[dict]:
    """What ``run-matrix --preset smoke`` records on a machine without a CUDA device."""
    rows, i = [], 0
    none = dict(status="skipped", error_class="unsupported", error_message="no CUDA device")

    def add(**kw):
        nonlocal i
        rows.append(_row(i, gpu_tag=CPU, row_id=f"cpu{i:05d}", **kw))
        i += 1

    k = dict(task="kernel-gemm", dtype="int8")
    for m in (64, 256):
        add(
            **k,
            mode="square",
            backend="cpu-ref",
            sparsity="dense",
            M=m,
            N=256,
            K=256,
            latency_us=2.0 * m,
        )
        for p, s in (("2_4", 0.9), ("2_8", 0.6)):
            add(
                **k,
                mode="square",
                backend="cpu-ref",
                sparsity=p,
                M=m,
                N=256,
                K=256,
                latency_us=2.0 * m / s,
            )
    for backend, p in (("cublaslt", "dense"), ("cusparselt", "2_4"), ("cusparselt", "2_8")):
        for m in (1024, 4096):
            add(**k, mode="square", backend=backend, sparsity=p, M=m, N=m, K=m, **none)
        for layer in ("qkv", "o"):
            add(
                **k,
                mode="model",
                model="Llama3.2-1B",
                layer=layer,
                backend=backend,
                sparsity=p,
                M=256,
                **none,
            )
    q = dict(task="kernel-quant", mode="quant", M=1024, **none)
    for out in ("int8", "fp8"):
        add(**q, kernel="quant_only", sparsity="dense", dtype="bf16", out_dtype=out, K=3584)
        add(**q, kernel="quant_slide", sparsity="2_8", dtype="bf16", out_dtype=out, K=3584)
    add(**q, kernel="dequant_bias", sparsity="dense", dtype="int32", out_dtype="bf16", N=3584)
    # small cells run in Triton's CPU interpreter: a latency, but no GPU bandwidth figure
    add(
        task="kernel-quant",
        mode="quant",
        backend="triton",
        kernel="quant_only",
        sparsity="dense",
        dtype="bf16",
        out_dtype="int8",
        M=64,
        K=256,
        latency_us=30000.0,
        latency_p25_us=29000.0,
        latency_p75_us=31000.0,
        timer="perf_counter(triton-interpreter)",
        extra={"interpreter": True, "copy_gbps": 14.0},
    )
    for task, mode, m in (("e2e-prefill", "prefill", 1024), ("e2e-decode", "decode", 64)):
        for backend, p in (("cublaslt", "dense"), ("cusparselt", "2_8")):
            add(
                task=task,
                mode=mode,
                model="Llama3.2-1B",
                dtype="int8",
                backend=backend,
                sparsity=p,
                M=m,
                **none,
            )
    return rows


def frame_of(rows: list[dict]) -> pd.DataFrame:
    return A.plain(to_frame(rows_to_table(rows)))


@pytest.fixture(scope="module")
def cells():
    return A.resolve_cells(frame_of(synthetic_rows()))


def test_dense_baseline_is_fastest_dense_backend(cells):
    sp = A.kernel_speedups(cells)
    sq = sp[(sp["mode"] == "square") & (sp["M"] == 1024)].set_index("sparsity")
    assert set(sq["dense_backend"]) == {"cublaslt"}
    assert sq.loc["2_4", "speedup"] == pytest.approx(1.6)
    assert sq.loc["2_inf", "speedup"] == pytest.approx(0.8)
    assert not sq["suspect"].any()


def test_speedup_above_bound_is_suspect(cells):
    sp = A.kernel_speedups(cells)
    row = sp[(sp["M"] == 64) & (sp["sparsity"] == "2_4")].iloc[0]
    assert row["speedup"] == pytest.approx(3.0)
    assert bool(row["suspect"])


def test_model_totals_need_all_four_layers(cells):
    sp = A.kernel_speedups(cells)
    totals = A.model_totals(sp)
    t = totals[(totals["M"] == 4096) & (totals["sparsity"] == "2_8")].iloc[0]
    assert t["dense_latency_us"] == pytest.approx(40.0)
    assert t["speedup"] == pytest.approx(1.25)
    three = sp[~((sp["layer"] == "down") & (sp["M"] == 1024))]
    assert set(A.model_totals(three)["M"]) == {4096}


def test_efficiency_formula(cells):
    sp = A.kernel_speedups(cells)
    eff = A.efficiencies(sp[sp["mode"] == "square"], ["gpu_tag", "M", "N", "K"])
    e = eff[(eff["M"] == 1024)].set_index("sparsity")["efficiency"]
    assert e["2_4"] == pytest.approx(1.0)
    assert e["2_8"] == pytest.approx((1.2 / 1.6) / (0.5 * 8 / 6))
    assert e["2_inf"] == pytest.approx((0.8 / 1.6) / 0.5)


def test_e2e_speedups(cells):
    e = A.e2e_speedups(cells)
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
    cells = A.resolve_cells(frame_of([*rows, later_fail, later_ok]))
    assert len(cells) == 1
    assert cells.iloc[0]["row_id"] == "x2"


def test_pass_counts(cells):
    p = A.pass_counts(cells, ["e2e-prefill"])
    q = p[(p["model"] == "Qwen2.5-7B") & (p["variant"] == "cusparselt 2_8")].iloc[0]
    assert (q["ok"], q["total"]) == (2, 3)
    assert A.order_variants(["cusparselt 2_10", "cublaslt", "cusparselt 2_4", "cutlass"]) == [
        "cutlass",
        "cublaslt",
        "cusparselt 2_4",
        "cusparselt 2_10",
    ]


def test_failure_mining_states_the_common_factor(cells):
    groups = A.failure_groups(cells)
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
    (g,) = A.failure_groups(A.resolve_cells(frame_of(rows)))
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
    (g,) = A.failure_groups(A.resolve_cells(frame_of(rows)))
    assert g["recommendation"]["kind"] == "cap_m" and g["recommendation"]["max_m"] == 512
    assert g["values"]["M"] == [1024, 2048, 4096]


def test_quant_rows_are_named_by_kernel_and_resolve_to_one_cell(cells):
    q = cells[(cells["task"] == "kernel-quant") & (cells["M"] == 1024)].set_index("kernel")
    assert sorted(q.index) == ["quant_only", "quant_slide"]  # the failed try + the ok one: 1
    assert q.loc["quant_slide", "status"] == "ok"
    assert set(q["backend"]) == {"quant_only", "quant_slide"} and set(q["mode"]) == {"quant"}
    (g,) = [g for g in A.failure_groups(cells) if g["task"] == "kernel-quant"]
    assert dict(g["factors"])["backend"] == "quant_only"
    assert g["error_class"] == "error" and g["message"] is None


def test_pass_counts_keep_skipped_cells_apart(cells):
    p = A.pass_counts(cells, ["kernel-gemm", "e2e-prefill", "kernel-quant"])
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
    assert A.variant(None, "2_8") == "- 2_8"
    assert A.variant(float("nan"), None) == "-"
    assert A.variant("cublaslt", "dense") == "cublaslt"
    assert not A.present(pd.NA) and not A.present("") and A.present(0)


def test_skip_groups_state_the_reason(cells):
    groups = {g["message"]: g for g in A.skip_groups(cells)}
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
        A.reason_key("predicted memory 75.3 GiB (80 bytes)") == "predicted memory # GiB (# bytes)"
    )


def test_quant_rows_carry_extra_figures(cells):
    q = A.quant_rows(cells[cells["gpu_tag"] == TAG])
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
    found = {(f["dtype"], f["out_dtype"]): f for f in A.quant_findings(A.quant_rows(cells))}
    f = found[("bf16", "int8")]
    assert (f["M"], f["low_pct"], f["low_at"]) == (4096, 50.0, "quant_slide 2_8, K=3584")
    (r,) = f["ratios"]
    assert (r["sparsity"], r["ratio"], r["at"]) == ("2_8", 1.25, "K=3584")
    d = found[("int32", "bf16")]
    assert d["low_at"] == "dequant_bias, N=3584" and d["ratios"] == []


def test_interpreter_quant_rows_have_no_bandwidth():
    q = A.quant_rows(A.resolve_cells(frame_of(cpu_smoke_rows())))
    (r,) = q.itertuples()  # the only ok quant row: timed in the interpreter
    assert r.interpreter and r.latency_us == 30000.0
    assert all(pd.isna(v) for v in (r.gbps, r.copy_gbps, r.pct_of_copy))
    assert A.quant_findings(q) == []  # no GPU figure, nothing to conclude
