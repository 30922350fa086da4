"""``slidesparse bench quant`` and ``slidesparse tune kernels``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from slidesparse.commands.groups import bench, tune
from slidesparse.core.errors import UserError

_TARGET_M = "16384,65536"
_TARGET_K = "3584,18944"


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--{name} {text!r}: give comma-separated positive integers") from None
    if not values or any(v <= 0 for v in values):
        raise UserError(f"--{name} {text!r}: give comma-separated positive integers")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _cache_dir(results: str) -> Path:
    from slidesparse.kernels import tuning
    from slidesparse.results.store import Store

    tag = tuning.current_gpu_tag()
    if tag is None:
        raise UserError("tuning needs a CUDA device (the Triton interpreter has nothing to tune)")
    return Store(results).cache_dir(tag)


@bench.command("quant")
@click.option("--M", "m_list", default=_TARGET_M, show_default=True, help="Token counts.")
@click.option("--K", "k_list", default=_TARGET_K, show_default=True, help="K (N for dequant).")
@click.option("--in-dtype", default="bf16", show_default=True, help="bf16, fp16 or fp32.")
@click.option("--out-dtypes", default="int8,fp8", show_default=True)
@click.option("--sparsity", default="all", show_default=True, help="quant_slide patterns.")
@click.option("--acc-dtypes", default="int32,bf16", show_default=True, help="dequant inputs.")
@click.option("--kernels", default="quant_only,quant_slide,dequant_bias", show_default=True)
@click.option("--results", default="results", show_default=True, help="Results root (cache).")
@click.option("--json-out", type=click.Path(dir_okay=False), help="Also write the rows here.")
@click.option("--no-check", is_flag=True, help="Skip the bit-exact check before timing.")
def bench_quant(
    m_list, k_list, in_dtype, out_dtypes, sparsity, acc_dtypes, kernels, results, json_out, no_check
) -> None:
    """Time quant_only, quant_slide and dequant_bias against this GPU's copy bandwidth."""
    from rich.console import Console

    from slidesparse.core import sparsity as sp
    from slidesparse.core.atomic import atomic_write_text
    from slidesparse.kernels import bench as kbench
    from slidesparse.kernels import tuning

    Ms, Ks = _ints(m_list, "M"), _ints(k_list, "K")
    patterns = tuple(p.name for p in sp.parse_patterns(sparsity))
    kbench.require_cuda_or_user_error()
    tuning.use(cache_dir=_cache_dir(results))
    rows = kbench.run_bench(
        Ms,
        Ks,
        in_dtype=in_dtype,
        out_dtypes=_names(out_dtypes),
        patterns=patterns,
        acc_dtypes=_names(acc_dtypes),
        kernels=_names(kernels),
        check=not no_check,
    )
    Console().print(kbench.format_table(rows))
    if json_out:
        atomic_write_text(Path(json_out), json.dumps(rows, indent=1, default=str) + "\n")


@tune.command("kernels")
@click.option("--model", help="Tune the K and N of this model's layers (e.g. Qwen2.5-7B).")
@click.option("--K", "k_list", help="K values of the quant kernels (default: the target Ks).")
@click.option("--N", "n_list", help="N values of dequant_bias (default: the K values).")
@click.option("--M", "m_list", default="16,128,1024,4096,16384,65536", show_default=True)
@click.option("--out-dtypes", default="int8,fp8", show_default=True)
@click.option("--sparsity", default="all", show_default=True)
@click.option("--results", default="results", show_default=True, help="Results root (cache).")
@click.option("--jobs", type=int, help="Parallel compile processes (default: CPUs, at most 16).")
def tune_kernels(model, k_list, n_list, m_list, out_dtypes, sparsity, results, jobs) -> None:
    """Tune the quant kernels on this GPU; configs go to <results>/<gpu_tag>/cache/."""
    from slidesparse.core import sparsity as sp
    from slidesparse.kernels import autotune, bench, tuning

    if model:
        Ks, Ns = autotune.model_sizes(model)
    else:
        Ks = _ints(k_list or _TARGET_K, "K")
        Ns = _ints(n_list, "N") if n_list else Ks
    cases = autotune.cases_for(
        Ks,
        Ns,
        _ints(m_list, "M"),
        out_dtypes=_names(out_dtypes),
        patterns=tuple(p.name for p in sp.parse_patterns(sparsity)),
    )
    bench.require_cuda_or_user_error()
    cache = _cache_dir(results)

    def progress(i, n, key, record):
        click.echo(f"[{i}/{n}] {key}: {record['latency_us']:.1f} us {record['config']}")

    entries = autotune.tune(cases, jobs=jobs, progress=progress)
    path = autotune.cache_path(cache)
    tuning.save_entries(path, tuning.current_gpu_tag(), entries)
    click.echo(f"saved {len(entries)} tuned configs to {path}")


commands: list = []  # both commands hang off the groups of slidesparse.commands.groups
