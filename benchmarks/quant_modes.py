"""Is a quant kernel config steady? The sample distribution of every launch config of one case.

    python benchmarks/quant_modes.py --kernel quant_slide --pattern 2_8 --M 16384 --K 3584

Each config of the case (the tuner's whole space, the table's pick marked) runs ``--samples``
times, each launch timed alone between CUDA events with the L2 flushed before it (the rows'
timer). Printed per config: the 2nd, 25th, 50th, 75th and 98th percentiles in µs and the
share of samples more than 25% above the 2nd percentile. A steady config has a narrow band
and a share near 0; a bimodal one (seen on an H200 for quant_slide INT8 2_8 at M=16384,
GROUPS=512 with 4 warps: 65% of launches slow on one machine, none on another) is what the
tuner's p90 ranking keeps out of the tables. ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="quant_slide",
                    choices=("quant_only", "quant_slide", "dequant_bias"))  # fmt: skip
    ap.add_argument("--pattern", default="2_8", help="quant_slide's 2_L pattern")
    ap.add_argument("--M", type=int, default=16384)
    ap.add_argument("--K", type=int, default=3584, help="K (quant kernels) or N (dequant_bias)")
    ap.add_argument("--dtype", default="int8,fp8", help="out dtypes (quant) / acc dtypes")
    ap.add_argument("--samples", type=int, default=1500)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    import torch

    from slidesparse.core import timing
    from slidesparse.kernels import bench, tuning

    if not torch.cuda.is_available():
        print("quant_modes needs a CUDA device", file=sys.stderr)
        return 2
    out = {}
    for dt in args.dtype.split(","):
        if args.kernel == "dequant_bias":
            case = bench.make_case("dequant_bias", args.M, args.K, dt, "bf16")
        else:
            pattern = args.pattern if args.kernel == "quant_slide" else None
            case = bench.make_case(args.kernel, args.M, args.K, "bf16", dt, pattern)
        inputs = bench.make_inputs(case, "cuda")
        picked = tuning.config_for(case.tuning_kernel, case.dtypes, case.size, case.M)
        print(f"{case.tuning_kernel} {case.dtypes} M={case.M} size={case.size}")
        for cfg in tuning.config_space(case.tuning_kernel, case.size):
            fn = bench.runner(case, inputs, cfg)
            try:
                fn()
                torch.cuda.synchronize()
            except Exception as exc:  # a config this GPU cannot launch
                print(f"  {json.dumps(cfg, sort_keys=True):58s} cannot launch: {exc}"[:160])
                continue
            xs = sorted(timing.time_fn(fn, "cuda", repeats=args.samples).samples_us)
            q = {p: timing.quantile(xs, p / 100) for p in (2, 25, 50, 75, 98)}
            slow = sum(x > 1.25 * q[2] for x in xs) / len(xs)
            mark = "  <- table" if cfg == picked else ""
            print(f"  {json.dumps(cfg, sort_keys=True):58s} "
                  + " ".join(f"p{p} {v:8.1f}" for p, v in q.items())
                  + f"  slow {slow:4.0%}{mark}")  # fmt: skip
            out[f"{case.tuning_kernel}|{case.dtypes}|{json.dumps(cfg, sort_keys=True)}"] = {
                **{f"p{p}_us": v for p, v in q.items()},
                "slow_share": slow,
                "table": cfg == picked,
            }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
