"""Synthetic store rows shared by the report, tables and merge tests: two GPUs, every task."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

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
    # Sparse cells timed interleaved with the dense one: (speedup, 95% interval); at M=256,
    # 2_4's interval holds 1.0 (within noise) and 2_8 ran where no dense cell had run.
    paired = {
        (64, "2_4"): (0.91, 0.89, 0.93),
        (64, "2_8"): (0.6, 0.59, 0.61),
        (256, "2_4"): (0.97, 0.94, 1.01),
    }
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
            extra = {}
            if (m, p) in paired:
                sp, lo, hi = paired[(m, p)]
                extra = {"speedup_vs_dense": sp, "speedup_lo": lo, "speedup_hi": hi,
                         "dense_latency_us": 2.0 * m, "dense_backend": "cpu-ref"}  # fmt: skip
            add(
                **k,
                mode="square",
                backend="cpu-ref",
                sparsity=p,
                M=m,
                N=256,
                K=256,
                latency_us=2.0 * m / s,
                extra=extra,
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


ENGINE_TAG = "H200_cc90_py312_cu130_x86_64"
_ENGINE_SPEED = {"dense": 1.0, "2_4": 1.25, "2_8": 0.95}  # tokens/s over dense
_ENGINE_GEMM_S = {"dense": 0.1, "2_4": 0.1 / 1.4, "2_8": 0.1 / 1.03}  # GEMMs timed alone


def engine_rows(tag: str = ENGINE_TAG) -> list[dict]:
    """An engine GPU: Qwen2.5-7B e2e cells on the engine (dense W8A8, 2_4, 2_8, bf16), the
    kernel-level model shapes at the prefill M, and one imported vLLM pair on the same tag
    (never compared with the engine's rows)."""
    rows, i = [], 0

    def add(**kw):
        nonlocal i
        rows.append(_row(i, gpu_tag=tag, row_id=f"E{i:05d}", **kw))
        i += 1

    def extra(share: float, gemm_s: float) -> str:
        engine = {"version": "0.1.0", "linear": "w8a8", "cuda_graphs": True}
        return json.dumps({"linear_share": share, "kernel_gemm_s": gemm_s, "engine": engine})

    for task, mode, ms, base in (
        ("e2e-prefill", "prefill", (4096, 16384), 70000.0),
        ("e2e-decode", "decode", (64,), 15000.0),
    ):
        for m in ms:
            for p, s in _ENGINE_SPEED.items():
                linear = "w8a8" if p == "dense" else "slidesparse"
                add(
                    task=task,
                    mode=mode,
                    model="Qwen2.5-7B",
                    dtype="int8",
                    backend="engine",
                    kernel=f"slidesparse-engine 0.1.0 ({linear}, "
                    + ("cublaslt)" if p == "dense" else "cusparselt)"),
                    sparsity=p,
                    M=m,
                    tokens_per_s=base * s,
                    extra=extra(0.8, _ENGINE_GEMM_S[p]),
                )
            add(
                task=task,
                mode=mode,
                model="Qwen2.5-7B",
                dtype="bf16",
                backend="engine",
                kernel="slidesparse-engine 0.1.0 (bf16, bf16)",
                sparsity="dense",
                M=m,
                tokens_per_s=base * 0.55,
                extra=extra(0.85, 0.2),
            )
    # the kernel matrix at the prefill M=4096: dense 100 µs per layer, 2_4 1.45x, 2_8 1.05x
    for layer, (n, kk) in QWEN7.items():
        for backend, p, lat in (
            ("cublaslt", "dense", 100.0),
            ("cusparselt", "2_4", 100 / 1.45),
            ("cusparselt", "2_8", 100 / 1.05),
        ):
            add(
                task="kernel-gemm",
                mode="model",
                model="Qwen2.5-7B",
                layer=layer,
                dtype="int8",
                backend=backend,
                sparsity=p,
                M=4096,
                N=n,
                K=kk,
                latency_us=lat,
            )
    for backend, p, tok in (("cublaslt", "dense", 50000.0), ("cusparselt", "2_8", 52000.0)):
        add(
            task="e2e-prefill",
            mode="prefill",
            model="Qwen2.5-7B",
            dtype="int8",
            backend=backend,
            sparsity=p,
            M=4096,
            tokens_per_s=tok,
            source="legacy",
        )
    return rows
