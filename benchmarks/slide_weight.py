"""How long pruning and sliding the largest model weight (Qwen2.5-7B gate_up^T, 37888 x 18944)
take on this machine's CPU (or GPU with --device cuda). Prints one line per pattern.

    python benchmarks/slide_weight.py [--N 37888 --K 18944] [--patterns 2_4,2_8,2_16,2_inf]
"""

from __future__ import annotations

import argparse
import time

import torch

from slidesparse.core.sparsity import parse_patterns, prune, slide_weight


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--N", type=int, default=37888)
    ap.add_argument("--K", type=int, default=18944)
    ap.add_argument("--patterns", default="2_4,2_8,2_16,2_inf")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    w = torch.randn(args.N, args.K, device=args.device).to(getattr(torch, args.dtype))
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"weight {args.N} x {args.K} {args.dtype} on {where}, {torch.get_num_threads()} threads")

    def sync() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    for p in parse_patterns(args.patterns):
        t0 = time.perf_counter()
        wp = prune(w, p)
        sync()
        t1 = time.perf_counter()
        ws = slide_weight(wp, p)
        sync()
        t2 = time.perf_counter()
        print(f"{p.name:>6}: prune {t1 - t0:6.2f} s  slide {t2 - t1:6.2f} s  -> {tuple(ws.shape)}")


if __name__ == "__main__":
    main()
