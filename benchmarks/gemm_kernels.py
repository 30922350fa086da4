"""GPU benchmark of the GEMM backends against the issue's targets (run on the device machine).

    python benchmarks/gemm_kernels.py --models Qwen2.5-7B,Qwen2.5-14B --M 16384 --out $OUT
    python benchmarks/gemm_kernels.py --sweep Qwen2.5-7B --out $OUT     # 4 x 9 x 9 x 2 sweep

Prints: the extension build time; per model and dtype, the speedup table (dense = fastest
dense backend of the run), the side-by-side with the published H100 totals, and the target
checks (cuBLASLt dense vs the torch built-in, INT8 cuBLASLt vs FP8 _scaled_mm, cuSPARSELt vs
torch._cslt_sparse_mm); for --sweep, the wall time of the whole sweep, search included.
Rows go to ``<out>/gemm_rows.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slidesparse.gemm import bench as lib

SWEEP_M = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PATTERNS = ("dense", "2_4", "2_6", "2_8", "2_10", "2_12", "2_14", "2_16", "2_inf")


def versions() -> dict:
    import torch

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cusparselt_torch": torch.backends.cusparselt.version(),
    }
    try:
        import triton

        out["triton"] = triton.__version__
    except ImportError:
        pass
    return out


def build_extension() -> dict:
    from slidesparse import extension, ops

    t0 = time.perf_counter()
    try:
        ops.ensure_loaded()
    except RuntimeError as exc:
        return {"ok": False, "error": str(exc), "seconds": time.perf_counter() - t0}
    return {
        "ok": True,
        "seconds": time.perf_counter() - t0,
        "library": str(extension.load()),
        "cusparselt_headers": ops.cusparselt_version(),
    }


_PROBE = """
import sys, torch
from slidesparse import ops, sparsity
s, m, lay = map(int, sys.argv[1:4])
torch.manual_seed(0)
w = sparsity.prune(torch.randint(-3, 4, (512, 1024), device="cuda").float(), "2_4").to(torch.int8)
x = torch.randint(-3, 4, (256, 1024), device="cuda").to(torch.int8)
c = ops.cusparselt_compress(w.contiguous(), lay)
print(ops.cusparselt_plan_info(x, 512, torch.int32, 0, s, m, lay))
y = ops.cusparselt_mm(c, x, 512, torch.int32, 0, s, m, lay)
ref = (x.double() @ w.double().T)
print("exact", torch.equal(y.double(), ref))
"""


def probe_split_k() -> list[str]:
    """Each split-K configuration in its own process (a crash kills only that one)."""
    import subprocess

    configs = [(2, 1), (2, 2), (4, 1), (4, 2), (2, -1), (4, -1), (-1, -1)]
    procs = {
        (s, m, lay): subprocess.Popen(
            [sys.executable, "-c", _PROBE, str(s), str(m), str(lay)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for s, m in configs
        for lay in (0, 1)
    }  # fmt: skip
    out = []
    for key, p in procs.items():
        text, _ = p.communicate(timeout=120)
        tail = " | ".join(text.strip().splitlines()[-2:])[-200:]
        out.append(f"split_k={key[0]} mode={key[1]} layout={key[2]}: rc={p.returncode} {tail}")
    return out


def target_checks(rows: list[dict]) -> list[str]:
    """The issue's per-layer targets, one line each (PASS/FAIL with the numbers)."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("correct")]
    by = {}
    for r in ok:
        by[(r["backend"], r["dtype"], r["M"], r.get("layer"), r["sparsity"])] = r["latency_us"]
    out = []
    layers = sorted({k[3] for k in by}, key=lambda x: str(x))
    Ms = sorted({k[2] for k in by})
    for M in Ms:
        for layer in layers:
            for dtype in ("int8", "fp8", "fp16", "bf16"):
                c, t = (
                    by.get(("cublaslt", dtype, M, layer, "dense")),
                    by.get(("torch-builtin", dtype, M, layer, "dense")),
                )
                if c and t:
                    out.append(
                        f"{'PASS' if c <= t * 1.01 else 'FAIL'} dense {dtype} M={M} {layer}: "
                        f"cublaslt {c:.1f} us vs torch-builtin {t:.1f} us ({t / c:.3f}x)"
                    )
                for p in PATTERNS[1:]:
                    s, ts = (
                        by.get(("cusparselt", dtype, M, layer, p)),
                        by.get(("torch-cslt", dtype, M, layer, p)),
                    )
                    if s and ts:
                        out.append(
                            f"{'PASS' if s <= ts * 1.01 else 'FAIL'} sparse {dtype} {p} M={M} "
                            f"{layer}: cusparselt {s:.1f} us vs torch-cslt {ts:.1f} us "
                            f"({ts / s:.3f}x)"
                        )
            i8, f8 = (
                by.get(("cublaslt", "int8", M, layer, "dense")),
                by.get(("torch-builtin", "fp8", M, layer, "dense")),
            )
            if i8 and f8:
                out.append(
                    f"{'PASS' if i8 <= f8 * 1.10 else 'FAIL'} int8-vs-fp8 M={M} {layer}: "
                    f"cublaslt int8 {i8:.1f} us vs _scaled_mm fp8 {f8:.1f} us ({i8 / f8:.3f})"
                )
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="")
    ap.add_argument("--square", default="", help="comma-separated square sizes")
    ap.add_argument("--dtypes", default="int8,fp8")
    ap.add_argument("--M", default="16384")
    ap.add_argument("--patterns", default=",".join(PATTERNS))
    ap.add_argument("--dense-backends", default="cublaslt,torch-builtin")
    ap.add_argument("--sparse-backends", default="cusparselt,torch-cslt")
    ap.add_argument("--sweep", default="", help="model for the full 4x9x9x2 sweep")
    ap.add_argument("--out", default=".")
    ap.add_argument("--probe-split-k", action="store_true", help="isolate split-K crashes")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"versions": versions(), "build": build_extension()}
    print(json.dumps(info, indent=1), flush=True)
    if args.probe_split_k:
        print("\n".join(probe_split_k()), flush=True)
    ctx = lib.bench_context(out / "cache")
    print(f"gpu_tag={ctx.gpu_tag}", flush=True)
    rows_file = (out / "gemm_rows.jsonl").open("a")

    def on_row(r: dict) -> None:
        rows_file.write(json.dumps(r, default=str) + "\n")
        rows_file.flush()
        if r.get("status") != "ok":
            print(f"  {r.get('status')}: {r.get('backend')} {r.get('dtype')} {r.get('sparsity')} "
                  f"M={r.get('M')}: {r.get('error_message')}", flush=True)  # fmt: skip
        elif r.get("correct") is False:
            print(f"  INCORRECT: {r['backend']} {r['dtype']} {r['sparsity']} M={r['M']} "
                  f"{r.get('layer')} err={r.get('max_abs_err')}", flush=True)  # fmt: skip

    def one(model, square_n, dtypes, Ms, patterns, dense_b, sparse_b, title, ctx=ctx):
        plan = lib.BenchPlan(model, dtypes, Ms, patterns, dense_b, sparse_b)
        t0 = time.perf_counter()
        if square_n:
            rows = []
            for n in square_n:
                p2 = lib.BenchPlan(None, dtypes, (n,), patterns, dense_b, sparse_b)
                rows += lib.run_bench(p2, ctx, on_row=on_row)
        else:
            rows = lib.run_bench(plan, ctx, on_row=on_row)
        dt = time.perf_counter() - t0
        lines = lib.speedup_table(rows)
        print(f"\n=== {title}: {len(rows)} rows in {dt:.1f} s ===", flush=True)
        print(lib.format_table(lines))
        print(lib.published_comparison(lines, model))
        print("\n".join(target_checks(rows)), flush=True)
        return rows, dt

    csv = lambda s: tuple(x for x in s.split(",") if x)  # noqa: E731
    for model in csv(args.models):
        one(model, None, csv(args.dtypes), tuple(map(int, csv(args.M))), csv(args.patterns),
            csv(args.dense_backends), csv(args.sparse_backends), model)  # fmt: skip
    if args.square:
        sq = tuple(map(int, csv(args.square)))
        one(None, sq, csv(args.dtypes), sq, csv(args.patterns), csv(args.dense_backends),
            csv(args.sparse_backends), "square")  # fmt: skip
    if args.sweep:
        _, dt = one(args.sweep, None, csv(args.dtypes), SWEEP_M, PATTERNS, ("cublaslt",),
                    ("cusparselt",), f"sweep {args.sweep}",
                    ctx=lib.bench_context(out / "cache_sweep"))  # fmt: skip
        print(f"SWEEP {args.sweep}: 4 layers x {len(SWEEP_M)} M x {len(PATTERNS)} patterns x "
              f"{len(csv(args.dtypes))} dtypes in {dt:.1f} s wall (search included)")  # fmt: skip
    rows_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
