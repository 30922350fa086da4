"""Why a sparse speedup falls short: clocks, power and energy of dense vs sparse GEMMs.

    python benchmarks/gemm_profile.py --model Qwen2.5-7B --M 16384 --cache $OUT/cache
    ncu --profile-from-start off --clock-control none --section SpeedOfLight --csv \\
        python benchmarks/gemm_profile.py --model Qwen2.5-7B --cache $OUT/cache --ncu

Each (dtype, layer, pattern) GEMM runs in the configuration its search stored (run
``benchmarks/gemm_kernels.py`` or ``slidesparse bench gemm`` first with the same cache; a
missing entry is searched here) back to back for ``--seconds``, while a thread samples the
GPU's SM clock, board power and clock-limit reasons through NVML (nvidia-ml-py). Printed per
GEMM: sustained latency, TOPS, median SM MHz and watts, energy per GEMM, the limit reasons
seen; then per layer the speedup of each pattern next to its energy ratio. On a board that
runs into its power limit, dense time tends to E_dense / P_cap, so the energy ratio is the
speedup a fully power-capped board (an H100 PCIe at 350 W, say) would approach.

``--ncu``: each GEMM runs once between cudaProfilerStart/Stop, separated by a one-element
fill kernel, so an Nsight Compute listing splits into GEMMs at the fill kernels; the order
is printed first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slidesparse.tasks import gemm_bench as lib

# nvmlDeviceGetCurrentClocksEventReasons bits (nvml.h), the ones a GEMM can hit.
REASONS = {
    0x1: "idle",
    0x2: "app_clocks",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
}


class PowerSampler:
    """NVML samples (SM MHz, watts, reason bits) taken every ``period_s`` while running."""

    def __init__(self, index: int = 0, period_s: float = 0.01):
        import pynvml

        pynvml.nvmlInit()
        self._nv = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.period_s = period_s
        self.samples: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def limits(self) -> dict:
        nv, h = self._nv, self.handle
        return {
            "power_limit_w": nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
            "max_sm_mhz": nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM),
            "name": nv.nvmlDeviceGetName(h),
        }

    def _loop(self) -> None:
        nv, h = self._nv, self.handle
        while not self._stop.is_set():
            self.samples.append(
                (
                    float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
                    nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
                    int(nv.nvmlDeviceGetCurrentClocksEventReasons(h)),
                )
            )
            time.sleep(self.period_s)

    def start(self) -> None:
        self.samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> dict:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        xs = self.samples
        bits = 0
        for _, _, r in xs:
            bits |= r
        return {
            "sm_mhz": statistics.median(s[0] for s in xs) if xs else None,
            "watts": statistics.median(s[1] for s in xs) if xs else None,
            "reasons": [name for bit, name in REASONS.items() if bits & bit],
            "n_samples": len(xs),
        }


def sustained(fn, seconds: float, sampler: PowerSampler) -> tuple[float, dict]:
    """(µs per call, NVML summary) of ``fn`` run back to back for ``seconds``.

    The first third warms the clocks and power to their steady state and is not sampled.
    """
    import torch

    def run_for(s: float) -> tuple[int, float]:
        n, t0 = 0, time.perf_counter()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        while time.perf_counter() - t0 < s:
            for _ in range(8):
                fn()
            n += 8
            torch.cuda.synchronize()  # bounds the launch queue so the window is honest
        end.record()
        torch.cuda.synchronize()
        return n, start.elapsed_time(end) * 1e3

    run_for(seconds / 3)
    sampler.start()
    n, us = run_for(seconds * 2 / 3)
    return us / n, sampler.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="Qwen2.5-7B")
    ap.add_argument("--M", type=int, default=16384)
    ap.add_argument("--dtypes", default="int8,fp8")
    ap.add_argument("--patterns", default="dense,2_4,2_8")
    ap.add_argument("--cache", default="cache", help="search cache dir (as gemm_kernels --out)")
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--ncu", action="store_true", help="one call each, for Nsight Compute")
    ap.add_argument("--json", default="", help="write the measurements here")
    args = ap.parse_args()

    import torch

    from slidesparse.core.models import get_model
    from slidesparse.core.sparsity import ideal_speedup, parse_pattern

    ctx = lib.bench_context(Path(args.cache))
    dtypes = [d for d in args.dtypes.split(",") if d]
    pats = [parse_pattern(p) for p in args.patterns.split(",") if p]
    layers = get_model(args.model).layers
    # Search whatever the cache lacks (a cached entry costs nothing).
    plan = lib.BenchPlan(args.model, tuple(dtypes), (args.M,), tuple(p.name for p in pats),
                         ("cublaslt",), ("cusparselt",))  # fmt: skip
    lib.run_bench(plan, ctx)

    results = []
    sampler = None if args.ncu else PowerSampler(torch.cuda.current_device())
    if sampler:
        print(json.dumps(sampler.limits()), flush=True)
    marker = torch.zeros(1, device="cuda")
    order = []
    for dtype in dtypes:
        for layer, (N, K) in layers.items():
            for pat in pats:
                backend = "cublaslt" if pat.is_dense else "cusparselt"
                fn, desc = lib.searched_call(ctx, backend, dtype, pat, N, K, args.M)
                for _ in range(3):
                    fn()
                torch.cuda.synchronize()
                if args.ncu:
                    order.append(f"{dtype} {layer} {pat.name} {desc['kernel']}")
                    torch.cuda.profiler.start()
                    marker.fill_(1.0)
                    fn()
                    torch.cuda.synchronize()
                    torch.cuda.profiler.stop()
                    continue
                us, nv = sustained(fn, args.seconds, sampler)
                tops = 2.0 * args.M * N * K / (us * 1e-6) / 1e12
                r = {"dtype": dtype, "layer": layer, "pattern": pat.name, "N": N, "K": K,
                     "M": args.M, "us": us, "tops": tops, **nv, "kernel": desc["kernel"],
                     "joules": (nv["watts"] or 0.0) * us * 1e-6}  # fmt: skip
                results.append(r)
                print(f"{dtype:4} {layer:8} {pat.name:6} {us:9.1f} us {tops:7.0f} TOPS "
                      f"{r['sm_mhz']:6.0f} MHz {r['watts']:6.1f} W {r['joules'] * 1e3:7.2f} mJ "
                      f"{','.join(r['reasons']) or '-'}  {desc['kernel']}", flush=True)  # fmt: skip
                del fn
    if args.ncu:
        print("NCU ORDER (each GEMM follows one fill kernel):")
        print("\n".join(f"  {i}: {o}" for i, o in enumerate(order)))
        return 0

    print("\nspeedup vs energy ratio (dense / pattern), sustained back-to-back runs:")
    by = {(r["dtype"], r["layer"], r["pattern"]): r for r in results}
    for dtype in dtypes:
        tot = {p.name: [0.0, 0.0] for p in pats}
        for layer in layers:
            d = by[(dtype, layer, "dense")]
            for p in pats:
                s = by[(dtype, layer, p.name)]
                tot[p.name][0] += s["us"]
                tot[p.name][1] += s["joules"]
                if p.is_dense:
                    continue
                print(f"  {dtype:4} {layer:8} {p.name:5} speedup {d['us'] / s['us']:5.3f} "
                      f"energy ratio {d['joules'] / s['joules']:5.3f} "
                      f"(bound {ideal_speedup(p):.2f}; MHz {d['sm_mhz']:.0f} -> {s['sm_mhz']:.0f}, "
                      f"W {d['watts']:.0f} -> {s['watts']:.0f})")  # fmt: skip
        for p in pats:
            if p.is_dense:
                continue
            dt, st = tot["dense"], tot[p.name]
            print(f"  {dtype:4} TOTAL    {p.name:5} speedup {dt[0] / st[0]:5.3f} "
                  f"energy ratio {dt[1] / st[1]:5.3f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
