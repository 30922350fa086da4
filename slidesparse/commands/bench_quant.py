"""``bench quant``: the fused quant kernels against the copy bandwidth of this GPU."""

from __future__ import annotations

import json
from pathlib import Path

import click

from slidesparse.commands.bench import bench
from slidesparse.commands.options import console, csv, int_list, target_spread_option
from slidesparse.core.errors import UserError
from slidesparse.core.timing import DEFAULT_TARGET as TARGET

_TARGET_M = "16384,65536"


_TARGET_K = "3584,18944"


def tuning_cache_dir(results: str) -> Path:
    """This GPU's cache folder in the store at ``results`` (UserError without a GPU)."""
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
@target_spread_option(TARGET, "Relative spread of the median each timing samples until.")
def bench_quant(
    m_list,
    k_list,
    in_dtype,
    out_dtypes,
    sparsity,
    acc_dtypes,
    kernels,
    results,
    json_out,
    no_check,
    target_spread,
) -> None:
    """Time quant_only, quant_slide and dequant_bias against this GPU's copy bandwidth."""

    from slidesparse.core import sparsity as sp
    from slidesparse.core.atomic import atomic_write_text
    from slidesparse.kernels import bench as kbench
    from slidesparse.kernels import tuning

    Ms, Ks = int_list(m_list, "M"), int_list(k_list, "K")
    patterns = tuple(p.name for p in sp.parse_patterns(sparsity))
    kbench.require_cuda_or_user_error()
    tuning.use(cache_dir=tuning_cache_dir(results))
    rows = kbench.run_bench(
        Ms,
        Ks,
        in_dtype=in_dtype,
        out_dtypes=tuple(csv(out_dtypes)),
        patterns=patterns,
        acc_dtypes=tuple(csv(acc_dtypes)),
        kernels=tuple(csv(kernels)),
        target=target_spread,
        check=not no_check,
    )
    console().print(kbench.format_table(rows))
    if json_out:
        atomic_write_text(Path(json_out), json.dumps(rows, indent=1, default=str) + "\n")


commands: list = []  # subcommands attach to their group when this module is imported
