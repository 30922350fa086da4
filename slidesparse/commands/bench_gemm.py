"""``bench gemm``: dense vs 2_L GEMMs per layer and model total, printed as a table."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from slidesparse.commands.bench import bench
from slidesparse.commands.options import csv, int_list, target_spread_option
from slidesparse.core.errors import UserError
from slidesparse.core.timing import DEFAULT_TARGET as TARGET


@bench.command("gemm")
@click.option("--model", default=None, help="Model whose four layer shapes to run (model mode).")
@click.option("--square", is_flag=True, help="Square shapes M = N = K instead of a model.")
@click.option("--dtype", "dtypes", default="int8,fp8", show_default=True)
@click.option("--M", "Ms", default="16384", show_default=True, help="Comma-separated M values.")
@click.option(
    "--sparsity", default="dense,2_4,2_6,2_8,2_10,2_12,2_14,2_16,2_inf", show_default=True
)
@click.option("--dense-backends", default="cublaslt,cutlass,torch-builtin", show_default=True)
@click.option(
    "--sparse-backends", default="cusparselt,cutlass-sparse,torch-cslt", show_default=True
)
@click.option("--cache-dir", type=click.Path(), default=None, help="Search cache root.")
@click.option("--json-out", type=click.Path(), default=None, help="Write every row as JSON lines.")
@target_spread_option(
    TARGET, "Relative spread of the median (and of the speedup) each timing samples until."
)
def bench_gemm(model, square, dtypes, Ms, sparsity, dense_backends, sparse_backends, cache_dir,
               json_out, target_spread) -> None:  # fmt: skip
    """Dense vs 2_L GEMM latency, speedup, bound and efficiency for one model or square shapes."""

    from slidesparse import gemm
    from slidesparse.core.sparsity import parse_pattern
    from slidesparse.tasks import gemm_bench as lib

    if bool(model) == bool(square):
        raise UserError("give exactly one of --model NAME or --square")
    for d in csv(dtypes):
        gemm.check_dtype(d)
    for b in csv(dense_backends) + csv(sparse_backends):
        gemm.get_spec(b)
    plan = lib.BenchPlan(
        model=model,
        dtypes=tuple(csv(dtypes)),
        Ms=tuple(int_list(Ms)),
        patterns=tuple(parse_pattern(p).name for p in csv(sparsity)),
        dense_backends=tuple(csv(dense_backends)),
        sparse_backends=tuple(csv(sparse_backends)),
    )
    ctx = lib.bench_context(Path(cache_dir) if cache_dir else None, target_spread=target_spread)
    click.echo(f"device={ctx.device} gpu_tag={ctx.gpu_tag} cells={len(plan.cells())}")
    t0 = time.perf_counter()
    rows = lib.run_bench(plan, ctx)
    click.echo(f"ran {len(rows)} rows in {time.perf_counter() - t0:.1f} s")
    for r in rows:
        if r.get("status") != "ok":
            click.echo(f"  {r['status']}: {r.get('backend')} {r.get('sparsity')} {r.get('dtype')} "
                       f"M={r.get('M')}: {r.get('error_message')}")  # fmt: skip
    lines = lib.speedup_table(rows)
    click.echo(lib.format_table(lines))
    click.echo(lib.published_comparison(lines, model))
    click.echo(lib.backend_comparison(rows))
    if json_out:
        with open(json_out, "w") as f:
            for r in rows:
                f.write(json.dumps(r, default=str) + "\n")


commands: list = []  # subcommands attach to their group when this module is imported
