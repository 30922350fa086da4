"""``build-kernels``: compile the csrc extension and the CUTLASS library ahead of time."""

from __future__ import annotations

import time
from pathlib import Path

import click

from slidesparse.core.errors import UserError


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
    help="Also build the CUTLASS fused-scale GEMMs (needs nvcc and nvidia-cutlass).",
)
@click.option(
    "--cutlass-arch",
    default=None,
    help="CUTLASS targets, comma-separated (90a, 100a, 120a, 121a) or 'all' [default: this "
    "GPU's target; every target on a machine without a GPU].",
)
@click.option("-v", "--verbose", is_flag=True)
def build_kernels(arch, out_dir, cutlass, cutlass_arch, verbose) -> None:
    """Compile the csrc extension and the CUTLASS library ahead of time (the Docker images
    run this), into the cache the loaders look in ($SLIDESPARSE_EXT_CACHE)."""

    from slidesparse.native import cutlass as lib
    from slidesparse.native import extension

    # Options first: a bad --cutlass-arch fails before minutes of compiling.
    targets = _cutlass_targets(lib, cutlass_arch) if cutlass else []
    config = extension.BuildConfig.detect(build_dir=Path(out_dir) if out_dir else None,
                                          arch_list=arch)  # fmt: skip
    t0 = time.perf_counter()
    path = extension.build(config, verbose=verbose)
    click.echo(f"built {path} in {time.perf_counter() - t0:.1f} s (cuSPARSELt from "
               f"{config.cusparselt_dir}, arch {config.arch_list or 'native'})")  # fmt: skip
    for target in targets:
        cconfig = lib.BuildConfig.detect(target)
        t0 = time.perf_counter()
        path = lib.build(cconfig, verbose=verbose)
        click.echo(f"built {path} in {time.perf_counter() - t0:.1f} s "
                   f"(CUDA {cconfig.cuda_version}, sm{target.name})")  # fmt: skip


def _cutlass_targets(lib, text: str | None) -> list:
    """The CUTLASS targets to build: those named, else this GPU's, else (no GPU: a Docker or
    CI build) every one."""
    if text is not None:
        return lib.parse_archs(text)
    cc = lib.device_cc()
    if cc is None:
        return lib.parse_archs("all")
    reason = lib.unsupported_reason(cc)
    if reason:
        raise UserError(f"{reason}; pass --no-cutlass, or --cutlass-arch to build for others")
    return [lib.arch_for(cc)]


commands = [build_kernels]
