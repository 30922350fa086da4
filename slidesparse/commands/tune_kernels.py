"""``tune kernels``: tune the Triton kernels for this GPU and save them in its cache."""

from __future__ import annotations

import click

from slidesparse.commands.bench_quant import _TARGET_K, tuning_cache_dir
from slidesparse.commands.options import csv, int_list
from slidesparse.commands.tune import tune


@tune.command("kernels")
@click.option("--model", help="Tune the K and N of this model's layers (e.g. Qwen2.5-7B).")
@click.option("--K", "k_list", help="K values of the quant kernels (default: the target Ks).")
@click.option("--N", "n_list", help="N values of dequant_bias (default: the K values).")
@click.option("--M", "m_list", default="16,128,1024,4096,16384,65536", show_default=True)
@click.option("--out-dtypes", default="int8,fp8", show_default=True)
@click.option("--sparsity", default="all", show_default=True)
@click.option("--results", default="results", show_default=True, help="Results root (cache).")
@click.option("--jobs", type=int, help="Parallel compile processes (default: CPUs, at most 16).")
@click.option(
    "--rep-ms",
    type=click.IntRange(1, 1000),
    default=25,
    show_default=True,
    help="Milliseconds of samples per config (do_bench's rep).",
)
def tune_kernels(model, k_list, n_list, m_list, out_dtypes, sparsity, results, jobs, rep_ms):
    """Tune the quant kernels on this GPU; configs go to <results>/<gpu_tag>/cache/."""
    from slidesparse.core import sparsity as sp
    from slidesparse.kernels import autotune, bench, tuning

    if model:
        Ks, Ns = autotune.model_sizes(model)
    else:
        Ks = int_list(k_list or _TARGET_K, "K")
        Ns = int_list(n_list, "N") if n_list else Ks
    cases = autotune.cases_for(
        Ks,
        Ns,
        int_list(m_list, "M"),
        out_dtypes=tuple(csv(out_dtypes)),
        patterns=tuple(p.name for p in sp.parse_patterns(sparsity)),
    )
    bench.require_cuda_or_user_error()
    cache = tuning_cache_dir(results)

    def progress(i, n, key, record):
        click.echo(f"[{i}/{n}] {key}: {record['latency_us']:.1f} us {record['config']}")

    entries = autotune.tune(cases, jobs=jobs, rep_ms=rep_ms, progress=progress)
    path = autotune.cache_path(cache)
    tuning.save_entries(path, tuning.current_gpu_tag(), entries)
    click.echo(f"saved {len(entries)} tuned configs to {path}")


commands: list = []  # subcommands attach to their group when this module is imported
