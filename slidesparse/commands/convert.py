"""``convert``: prune a checkpoint to (L-2):L and write it as compressed-tensors W8A8."""

from __future__ import annotations

import click


@click.command("convert")
@click.argument("src")
@click.option("--sparsity", required=True, help="2_L pattern to prune to (e.g. 2_8), or dense.")
@click.option(
    "--dtype",
    type=click.Choice(["int8", "fp8"]),
    default=None,
    help="W8A8 dtype [default: a W8A8 source's own, else int8].",
)
@click.option("-o", "--output", "dst", required=True, type=click.Path(), help="New folder.")
@click.option("--store-slid", is_flag=True, help="Also store the slid weights.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None)
def convert_cmd(src, sparsity, dtype, dst, store_slid, device) -> None:
    """Prune SRC (a folder or a Hugging Face id) by magnitude and write a W8A8 checkpoint."""
    from slidesparse.engine.convert import convert

    r = convert(src, dst, sparsity, dtype, store_slid=store_slid, device=device)
    click.echo(
        f"{r.dst}: {r.linears} linears pruned to {r.pattern} and stored {r.dtype.upper()} "
        f"W8A8, {r.tensors} tensors, {r.seconds:.1f} s (source sha256 {r.source_sha256[:12]})"
    )


commands = [convert_cmd]
