"""Tune the quant kernels on this GPU: time every config of a case, keep the fastest.

Results are records in :mod:`slidesparse.kernels.tuning`'s JSON tables (one per GPU tag),
never Python source. Each candidate is first checked bit for bit against the torch reference
on a few rows, so a config that miscompiles can never win. Compilation dominates a cold
tuning run, so :func:`precompile` builds every candidate in parallel processes first (they
fill Triton's on-disk cache, which the timing process then reads).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime

from slidesparse.core import sparsity
from slidesparse.core.errors import UserError
from slidesparse.core.timing import GRAPH_MAX_M
from slidesparse.kernels import tuning
from slidesparse.kernels.bench import (
    TIMER,
    TIMER_GRAPH,
    Case,
    check_case,
    make_case,
    make_inputs,
    require_cuda,
    runner,
    time_fn,
)

_CHECK_ROWS = 48  # rows of the per-config correctness check (3 row blocks of 16)


def cases_for(
    Ks: list[int],
    Ns: list[int],
    Ms: list[int],
    *,
    in_dtype: str = "bf16",
    out_dtypes: tuple[str, ...] = ("int8", "fp8"),
    patterns: tuple[str, ...] = sparsity.ALL_SPARSE,
    acc_dtypes: tuple[str, ...] = ("int32", "bf16"),
) -> list[Case]:
    """Every case to tune: quant_only and quant_slide per K, dequant_bias per N."""
    cases = []
    for M in Ms:
        for K in Ks:
            for out in out_dtypes:
                cases.append(make_case("quant_only", M, K, in_dtype, out))
                cases += [make_case("quant_slide", M, K, in_dtype, out, p) for p in patterns]
        for N in Ns:
            cases += [make_case("dequant_bias", M, N, acc, "bf16") for acc in acc_dtypes]
    return cases


def model_sizes(model: str) -> tuple[list[int], list[int]]:
    """The distinct K (quant kernels) and N (dequant_bias) of a model's four linear layers."""
    from slidesparse.core.models import get_model

    layers = get_model(model).layers.values()
    return sorted({k for _, k in layers}), sorted({n for n, _ in layers})


def _compile_one(item: tuple[Case, dict]) -> str | None:
    """Worker: run one (case, config) on a few rows so Triton compiles and caches it."""
    case, config = item
    small = Case(case.kernel, 16, case.size, case.in_dtype, case.out_dtype, case.pattern)
    try:
        runner(small, make_inputs(small, "cuda"), config)()
    except Exception as exc:  # reported, the timing pass skips the config on its own
        return f"{case.tuning_kernel} {config}: {type(exc).__name__}: {exc}"
    return None


def precompile(cases: list[Case], jobs: int | None = None) -> list[str]:
    """Compile every candidate config of ``cases`` in ``jobs`` processes; returns failures."""
    seen, items = set(), []
    for case in cases:
        for config in tuning.config_space(case.tuning_kernel, case.size):
            key = (case.tuning_kernel, case.dtypes, case.size, str(sorted(config.items())))
            if key not in seen:  # M does not change the compiled code
                seen.add(key)
                items.append((case, config))
    jobs = jobs or min(16, os.cpu_count() or 1)
    if jobs <= 1:
        return [e for e in map(_compile_one, items) if e]
    import multiprocessing

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return [e for e in pool.map(_compile_one, items) if e]


# Configs are ranked by the 90th percentile of their samples, not the median: some quant_slide
# configs are bimodal (on an H200, INT8 2_8 at M=16384, K=3584: GROUPS=512, 4 warps ran 58 µs
# in some launches and 77-90 µs in most), and a median from one short burst can land in the
# fast mode, so the table shipped a config that ran 44% slower in the next run. A high
# quantile ranks such a config by its slow mode; a steady one loses almost nothing by it.
RANKED_BY = "p90"


def graphed(M: int) -> bool:
    """Whether a case at ``M`` rows is timed from a CUDA graph (see timing.GRAPH_MAX_M)."""
    return M <= GRAPH_MAX_M


def pick(timings: list[tuple[float, float, dict]]) -> tuple[float, float, dict]:
    """The (p90, median, config) to keep: lowest p90, then lowest median, then first."""
    return min(enumerate(timings), key=lambda it: (it[1][0], it[1][1], it[0]))[1]


def tune_case(case: Case, *, warmup_ms: int = 5, rep_ms: int = 25) -> dict:
    """Time every config of ``case``; the record of the fastest correct one."""
    import torch
    import triton

    require_cuda()
    inputs = make_inputs(case, "cuda")
    check = Case(case.kernel, _CHECK_ROWS, case.size, case.in_dtype, case.out_dtype, case.pattern)
    check_inputs = make_inputs(check, "cuda", seed=1)
    timings, rejected = [], []
    for config in tuning.config_space(case.tuning_kernel, case.size):
        try:
            if not check_case(check, check_inputs, runner(check, check_inputs, config)()):
                rejected.append({"config": config, "why": "wrong result"})
                continue
            t = time_fn(runner(case, inputs, config), warmup_ms=warmup_ms, rep_ms=rep_ms,
                        graph=graphed(case.M))  # fmt: skip
        except Exception as exc:  # out of resources, or a config that does not compile here
            rejected.append({"config": config, "why": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        timings.append((t["latency_p90_us"], t["latency_us"], config))
    if not timings:
        raise UserError(f"no config of {case.tuning_kernel} ran for {case}: {rejected}")
    default = tuning.default_config(case.tuning_kernel, case.size, case.M)
    best_p90, best_us, best = pick(timings)
    # quant_slide has two kernels (BLOCK: per-window, GROUPS: per-group); keep each one's best.
    by_family = {}
    for p90, _, c in timings:
        family = "GROUPS" if "GROUPS" in c else "BLOCK"
        by_family[family] = min(p90, by_family.get(family, p90))
    return {
        "config": best,
        "latency_us": best_us,
        "latency_p90_us": best_p90,
        "ranked_by": RANKED_BY,
        "default_latency_us": next((us for _, us, c in timings if c == default), None),
        "best_p90_us_by_family": by_family,
        "candidates": len(timings),
        "rejected": rejected,
        "M": case.M,
        "timer": TIMER_GRAPH if graphed(case.M) else TIMER,
        "device": torch.cuda.get_device_name(),
        "triton": triton.__version__,
        "torch": torch.__version__,
        "tuned_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def tune(cases: list[Case], *, jobs: int | None = None, rep_ms: int = 25, progress=None) -> dict:
    """Precompile, then tune every case: ``{table key: record}``."""
    require_cuda()
    precompile(cases, jobs)
    entries = {}
    for i, case in enumerate(cases):
        key = tuning.make_key(case.tuning_kernel, case.dtypes, case.size, case.M)
        if key in entries:  # two Ms in one bucket: the first one tuned wins
            continue
        entries[key] = tune_case(case, rep_ms=rep_ms)
        if progress is not None:
            progress(i + 1, len(cases), key, entries[key])
    return entries


def cache_path(cache_dir) -> str:
    """The tuned-config file inside a per-GPU cache folder."""
    return os.path.join(os.fspath(cache_dir), tuning.CACHE_FILE)
