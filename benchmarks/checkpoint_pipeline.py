"""Time a checkpoint through the pipeline: convert (prune to 2_L, W8A8) -> load into the
engine (dense W8A8 pruned, and slidesparse with and without stored slid weights) -> greedy
tokens of both. Prints each time and whether the tokens are identical.

    python benchmarks/random_checkpoint.py --model Llama3.2-1B -o /tmp/l1b
    python benchmarks/checkpoint_pipeline.py /tmp/l1b --sparsity 2_8 -o /tmp/l1b-2_8
"""

from __future__ import annotations

import argparse
import time

import torch

from slidesparse.engine import build_engine
from slidesparse.engine.convert import convert


def _load(folder, backend: str, pattern: str, device: str):
    t = time.perf_counter()
    eng = build_engine(folder, backend, sparsity=pattern, device=device, weight_cache=False)
    if device == "cuda":
        torch.cuda.synchronize()
    return eng, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("--sparsity", default="2_8")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    slid_dst = args.output + "-slid"
    for dst, store in ((args.output, False), (slid_dst, True)):
        r = convert(args.src, dst, args.sparsity, args.dtype, store_slid=store, progress=False)
        print(f"convert{' --store-slid' if store else ''}: {r.seconds:.1f} s, {r.linears} linears")
    prompt = torch.randint(0, 500, (1, 16), generator=torch.Generator().manual_seed(0))
    out = {}
    for label, folder, backend in (
        ("w8a8 (pruned)", args.output, "w8a8"),
        ("slidesparse, slide on load", args.output, "slidesparse"),
        ("slidesparse, stored slid", slid_dst, "slidesparse"),
    ):
        eng, seconds = _load(folder, backend, args.sparsity, device)
        out[label] = eng.generate(prompt.to(device), args.tokens).cpu()
        print(f"load {label}: {seconds:.2f} s")
        del eng
    ref = out["w8a8 (pruned)"]
    same = all(torch.equal(ref, v) for v in out.values())
    print(f"greedy {args.tokens} tokens identical across the three engines: {same}")


if __name__ == "__main__":
    main()
