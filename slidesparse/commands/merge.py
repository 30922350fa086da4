"""``merge``: union result stores per GPU tag; inputs are never modified."""

from __future__ import annotations

import warnings
from pathlib import Path

import click


@click.command("merge")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Output store.")
def merge_cmd(inputs: tuple[Path, ...], out: Path):
    """Merge result stores INPUTS into OUT (union per GPU tag; inputs are never modified)."""
    from slidesparse.results.merge import merge_stores

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = merge_stores(list(inputs), out)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    for tag in sorted(summary.rows_out):
        click.echo(
            f"{tag}: {summary.rows_in[tag]} rows in, {summary.rows_out[tag]} rows out, "
            f"{summary.cells_with_history[tag]} cells with history"
        )


commands = [merge_cmd]
