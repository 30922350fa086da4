"""``build-kernels``: compile the csrc extension ahead of time."""

from __future__ import annotations

import time
from pathlib import Path

import click


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

    from slidesparse.native import extension

    config = extension.BuildConfig.detect(build_dir=Path(out_dir) if out_dir else None,
                                          arch_list=arch)  # fmt: skip
    t0 = time.perf_counter()
    path = extension.build(config, verbose=verbose)
    click.echo(f"built {path} in {time.perf_counter() - t0:.1f} s (cuSPARSELt from "
               f"{config.cusparselt_dir}, arch {config.arch_list or 'native'})")  # fmt: skip


commands = [build_kernels]
