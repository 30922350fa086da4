"""``build-kernels``: compile the csrc extension and the CUTLASS library ahead of time."""

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
    help="TORCH_CUDA_ARCH_LIST of the csrc extension, e.g. '8.0;9.0a;10.0a'.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(),
    default=None,
    help="Build directory of the csrc extension.",
)
@click.option(
    "--cutlass/--no-cutlass",
    default=True,
    show_default=True,
    help="Also build the CUTLASS fused-scale GEMMs (sm90a; needs nvcc and nvidia-cutlass).",
)
@click.option("-v", "--verbose", is_flag=True)
def build_kernels(arch, out_dir, cutlass, verbose) -> None:
    """Compile the csrc extension and the CUTLASS library ahead of time (the Docker images
    run this), into the cache the loaders look in ($SLIDESPARSE_EXT_CACHE)."""

    from slidesparse.native import extension

    config = extension.BuildConfig.detect(build_dir=Path(out_dir) if out_dir else None,
                                          arch_list=arch)  # fmt: skip
    t0 = time.perf_counter()
    path = extension.build(config, verbose=verbose)
    click.echo(f"built {path} in {time.perf_counter() - t0:.1f} s (cuSPARSELt from "
               f"{config.cusparselt_dir}, arch {config.arch_list or 'native'})")  # fmt: skip
    if not cutlass:
        return
    from slidesparse.native import cutlass as lib

    cconfig = lib.BuildConfig.detect()
    t0 = time.perf_counter()
    path = lib.build(cconfig, verbose=verbose)
    click.echo(f"built {path} in {time.perf_counter() - t0:.1f} s (CUDA {cconfig.cuda_version}, "
               f"sm{', sm'.join(cconfig.archs)})")  # fmt: skip


commands = [build_kernels]
