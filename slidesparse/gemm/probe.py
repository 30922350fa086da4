"""Crash-isolated probing of cuSPARSELt configurations.

Some cuSPARSELt plans kill the process instead of returning an error status (SIGSEGV in plan
creation, seen on an H200 with cuSPARSELt 0.8.0). :func:`probe` runs a list of configurations
in a child process, one after another, each announced on stdout before it starts; when the
child dies, the announced configuration is recorded as ``crashed`` with the exit status and a
fresh child carries on after it. Each configuration compresses a small 2:4 weight, builds the
plan, runs the product once and compares it with the fp64 reference, so ``ok`` means "ran and
was right", not only "planned".

Run as ``python -m slidesparse.gemm.probe`` (the child): configurations as a JSON list on
stdin, one JSON line per event on stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable

# Relative error (max |y - ref| / max |ref|) a correct product stays under: operands are small
# integers, so only the output rounding (bf16: 2^-8) contributes.
_REL_TOL = 2.0**-6
_OUT = {"int8": "int32", "fp8": "bf16", "fp16": "fp16", "bf16": "bf16"}
_REPEATS = 3
_NO_CHILD = "child: "  # detail prefix of configurations whose child died before starting


def config(
    dtype: str,
    M: int,
    N: int,
    Ks: int,
    *,
    alg_id: int = 0,
    split_k: int = 1,
    split_k_mode: int = -1,
    layout: int = 0,
    out: str | None = None,
) -> dict:
    """One probe configuration (the csrc ``cusparselt_mm`` arguments plus the shape)."""
    return {
        "dtype": dtype,
        "out": out or _OUT[dtype],
        "M": M,
        "N": N,
        "Ks": Ks,
        "alg_id": alg_id,
        "split_k": split_k,
        "split_k_mode": split_k_mode,
        "layout": layout,
    }


def probe(
    configs: Iterable[dict], *, timeout_s: float = 300.0, child: list[str] | None = None
) -> list[dict]:
    """Run ``configs`` in child processes; one result per configuration, in order.

    A result is the configuration plus ``status`` (``ok``, ``wrong``, ``error`` with the
    error's first line, ``cuda_error`` for a sticky CUDA error, after which the child leaves
    and a fresh one carries on, or ``crashed`` with the child's exit status) and ``detail``.
    ``child``: the child's command line (default: this module), which speaks the protocol
    above.
    """
    todo = list(configs)
    results: dict[int, dict] = {}
    start = 0
    while start < len(todo):
        batch = todo[start:]
        proc = subprocess.run(
            child or [sys.executable, "-m", "slidesparse.gemm.probe"],
            input=json.dumps(batch),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        begun = last_end = None
        for line in proc.stdout.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if "begin" in ev:
                begun = start + ev["begin"]
            elif "end" in ev:
                i = last_end = start + ev["end"]
                results[i] = {**todo[i], "status": ev["status"], "detail": ev.get("detail")}
                begun = None
        if proc.returncode == 0 and begun is None:
            break
        if begun is None and last_end is not None:
            # The child left after a sticky CUDA error (faults.is_sticky): go on in a fresh one.
            start = last_end + 1
            continue
        if begun is None:  # died before announcing anything: nothing more can be learnt
            tail = proc.stderr.strip().splitlines()[-1:] or [""]
            for i in range(start, len(todo)):
                if i not in results:
                    results[i] = {**todo[i], "status": "error", "detail": f"{_NO_CHILD}{tail[0]}"}
            break
        results[begun] = {
            **todo[begun],
            "status": "crashed",
            "detail": f"exit status {proc.returncode}",
        }
        start = begun + 1
    return [results[i] for i in range(len(todo)) if i in results]


def probe_groups(
    groups: Iterable[Iterable[dict]],
    *,
    workers: int = 8,
    timeout_s: float = 300.0,
    child: list[str] | None = None,
) -> list[dict]:
    """:func:`probe` each group in its own chain of children, ``workers`` chains at a time.

    Groups run concurrently, so a group of configurations that all crash costs one child
    start per crash in its own chain only.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as ex:
        futures = [ex.submit(probe, list(g), timeout_s=timeout_s, child=child) for g in groups]
        return [r for f in futures for r in f.result()]


VET_FILE = "cusparselt_vetted.json"
_VET_CHAIN = 6
_VET_FIELDS = ("dtype", "out", "alg_id", "split_k", "split_k_mode", "layout")


def vet_key(c: dict) -> str:
    """The vetting cache key of a configuration (its library arguments, not its shape)."""
    return "|".join(f"{f}={c.get(f)}" for f in _VET_FIELDS)


def vet(
    candidates: list[dict],
    *,
    dtype: str,
    out: str,
    shape: tuple[int, int, int],
    cache_dir,
    gpu_tag: str,
    workers: int | None = None,
    child: list[str] | None = None,
    default_layout: int = 0,
) -> tuple[list[dict], dict[str, dict]]:
    """The cuSPARSELt ``candidates`` that run correctly here, and those that did not.

    Some configurations kill the process or its CUDA context (on an H100 with cuSPARSELt
    0.8.0, FP16 plans that die with "an illegal instruction"); timing them inside a worker
    would lose the whole search, and every later cell, to one bad plan. Each configuration
    not yet vetted on this GPU tag therefore runs once, crash-isolated (:func:`probe`), at
    ``shape`` = (M, N, K_slide); the verdicts are cached per GPU tag, keyed by
    :func:`vet_key`, so each configuration is vetted once per machine. Returns
    (candidates that were ``ok``, {key: verdict} of the ones left out). Candidates without a
    ``layout`` are run in ``default_layout`` (3 is torch._cslt_sparse_mm's description).
    The probe runs at most M=512 and N=4096 of ``shape``: a configuration names a kernel,
    whose faults do not depend on the grid, and a dozen children at full size could exhaust
    the memory the worker needs.
    """
    import os

    from slidesparse.gemm.search import SearchCache

    cache = SearchCache.open(cache_dir, gpu_tag, name=VET_FILE)
    M, N, Ks = min(shape[0], 512), min(shape[1], 4096), shape[2]
    workers = workers or min(16, os.cpu_count() or 1)

    def as_probe(c: dict) -> dict:
        return config(dtype, M, N, Ks, out=out, alg_id=c.get("alg_id", 0),
                      split_k=c.get("split_k", 1), split_k_mode=c.get("split_k_mode", -1),
                      layout=c.get("layout", default_layout))  # fmt: skip

    todo = {}
    for c in candidates:
        pc = as_probe(c)
        if cache.get(vet_key(pc)) is None:
            todo.setdefault(vet_key(pc), pc)
    if todo:
        # Short chains of neighbouring configurations (one layout and split): a crash costs a
        # new child in its own chain only, and bad alg ids come in runs.
        by: dict[tuple, list[dict]] = {}
        for pc in todo.values():
            by.setdefault((pc["layout"], pc["split_k"], pc["split_k_mode"]), []).append(pc)
        chains = [g[i : i + _VET_CHAIN] for g in by.values() for i in range(0, len(g), _VET_CHAIN)]
        results = probe_groups(chains, workers=workers, child=child)
        cache.update({
            vet_key(r): {"status": r["status"], "detail": r.get("detail"),
                         "shape": f"{M}x{N}x{Ks}"}
            for r in results
            if not str(r.get("detail", "")).startswith(_NO_CHILD)
        })  # fmt: skip
    kept, left_out = [], {}
    for c in candidates:
        key = vet_key(as_probe(c))
        verdict = cache.get(key)
        # Unvetted (the child could not start at all): trusted as before vetting, so a broken
        # probe costs isolation, not results; the runner still isolates the worker.
        if verdict is None or verdict.get("status") == "ok":
            kept.append(c)
        else:
            left_out[key] = verdict
    return kept, left_out


def vet_prepared(
    weight, inp, candidates: list[dict], *, cache_dir, gpu_tag: str, default_layout: int = 0
) -> tuple[list[dict], dict[str, dict]]:
    """:func:`vet` for a backend's prepared ``weight`` and lifted input ``inp[M, K_slide]``."""
    return vet(candidates, dtype=weight.dtype, out=weight.out_dtype,
               shape=(inp.shape[0], weight.N, weight.K_slide), cache_dir=cache_dir,
               gpu_tag=gpu_tag, default_layout=default_layout)  # fmt: skip


def _run_child(configs: list[dict]) -> None:
    import torch

    from slidesparse.core import faults, sparsity
    from slidesparse.gemm.operands import torch_dtype
    from slidesparse.native import ops

    ops.ensure_loaded()
    compressed: dict[tuple, tuple] = {}
    for i, c in enumerate(configs):
        print(json.dumps({"begin": i}), flush=True)
        try:
            dt = torch_dtype(c["dtype"])
            out = torch_dtype(c.get("out") or _OUT[c["dtype"]])
            key = (c["dtype"], c["N"], c["Ks"], c["layout"] & 1)
            if key not in compressed:
                g = torch.Generator(device="cuda").manual_seed(0)
                w = torch.randint(-2, 3, (c["N"], c["Ks"]), device="cuda", generator=g).float()
                w = sparsity.prune(w, "2_4")
                compressed[key] = (w, ops.cusparselt_compress(w.to(dt).contiguous(), key[3]))
            w, comp = compressed[key]
            g = torch.Generator(device="cuda").manual_seed(1)
            x = torch.randint(-2, 3, (c["M"], c["Ks"]), device="cuda", generator=g).float()
            args = (c["alg_id"], c["split_k"], c["split_k_mode"], c["layout"])
            info = ops.cusparselt_plan_info(x.to(dt), c["N"], out, *args)
            xd = x.to(dt).contiguous()
            for _ in range(_REPEATS):  # some faults only show on a re-launch of the plan
                y = ops.cusparselt_mm(comp, xd, c["N"], out, *args)
            ref = x.double() @ w.double().T
            err = (y.double() - ref).abs().max().item() / max(ref.abs().max().item(), 1.0)
            status = "ok" if err <= _REL_TOL else "wrong"
            detail = f"rel_err={err:.2e} max_alg_id={info.get('max_alg_id')}"
            ev = {"end": i, "status": status, "detail": detail}
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            ev = {"end": i, "status": "error", "detail": first[:300]}
            if faults.is_sticky(str(exc)):
                # The CUDA context is dead: every later configuration in this process would
                # fail for this one's sake.
                ev["status"] = "cuda_error"
                print(json.dumps(ev), flush=True)
                sys.exit(3)
        print(json.dumps(ev), flush=True)


if __name__ == "__main__":
    _run_child(json.loads(sys.stdin.read()))
