"""``slidesparse bench gemm`` and ``slidesparse build-kernels``."""

from __future__ import annotations

import json
import time

import click

from slidesparse.commands.groups import bench
from slidesparse.core.errors import UserError


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(t) for t in _csv(text))
    except ValueError:
        raise UserError(f"--M {text!r} must be comma-separated positive integers") from None
    if not vals or min(vals) <= 0:
        raise UserError(f"--M {text!r} must be comma-separated positive integers")
    return vals


@bench.command("gemm")
@click.option("--model", default=None, help="Model whose four layer shapes to run (model mode).")
@click.option("--square", is_flag=True, help="Square shapes M = N = K instead of a model.")
@click.option("--dtype", "dtypes", default="int8,fp8", show_default=True)
@click.option("--M", "Ms", default="16384", show_default=True, help="Comma-separated M values.")
@click.option(
    "--sparsity", default="dense,2_4,2_6,2_8,2_10,2_12,2_14,2_16,2_inf", show_default=True
)
@click.option("--dense-backends", default="cublaslt,torch-builtin", show_default=True)
@click.option("--sparse-backends", default="cusparselt,torch-cslt", show_default=True)
@click.option("--cache-dir", type=click.Path(), default=None, help="Search cache root.")
@click.option("--json-out", type=click.Path(), default=None, help="Write every row as JSON lines.")
def bench_gemm(model, square, dtypes, Ms, sparsity, dense_backends, sparse_backends, cache_dir,
               json_out) -> None:  # fmt: skip
    """Dense vs 2_L GEMM latency, speedup, bound and efficiency for one model or square shapes."""
    from pathlib import Path

    from slidesparse import gemm
    from slidesparse.core.sparsity import parse_pattern
    from slidesparse.tasks import gemm_bench as lib

    if bool(model) == bool(square):
        raise UserError("give exactly one of --model NAME or --square")
    for d in _csv(dtypes):
        gemm.check_dtype(d)
    for b in _csv(dense_backends) + _csv(sparse_backends):
        gemm.get_spec(b)
    plan = lib.BenchPlan(
        model=model,
        dtypes=tuple(_csv(dtypes)),
        Ms=_ints(Ms),
        patterns=tuple(parse_pattern(p).name for p in _csv(sparsity)),
        dense_backends=tuple(_csv(dense_backends)),
        sparse_backends=tuple(_csv(sparse_backends)),
    )
    ctx = lib.bench_context(Path(cache_dir) if cache_dir else None)
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
    if json_out:
        with open(json_out, "w") as f:
            for r in rows:
                f.write(json.dumps(r, default=str) + "\n")


@click.command("build-kernels")
@click.option(
    "--arch-list",
    "--arch",
    "arch",
    default=None,
    help="TORCH_CUDA_ARCH_LIST, e.g. '8.0;9.0a;10.0a'.",
)
@click.option("--out", "out_dir", type=click.Path(), default=None, help="Build directory.")
@click.option("-v", "--verbose", is_flag=True)
def build_kernels(arch, out_dir, verbose) -> None:
    """Compile the csrc extension ahead of time (the Docker images run this)."""
    from pathlib import Path

    from slidesparse.native import extension

    config = extension.BuildConfig.detect(build_dir=Path(out_dir) if out_dir else None,
                                          arch_list=arch)  # fmt: skip
    t0 = time.perf_counter()
    path = extension.build(config, verbose=verbose)
    click.echo(f"built {path} in {time.perf_counter() - t0:.1f} s (cuSPARSELt from "
               f"{config.cusparselt_dir}, arch {config.arch_list or 'native'})")  # fmt: skip


commands = [build_kernels]
