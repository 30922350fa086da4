"""``slidesparse patterns``: the table of sparsity patterns and their shapes."""

from __future__ import annotations

import click

from slidesparse.commands.options import K_OPTION, SPARSITY_OPTION, console


@click.command("patterns")
@K_OPTION
@SPARSITY_OPTION
def patterns_command(k: int | None, sparsity) -> None:
    """List patterns: non-zeros, K expansion, ideal speedup and (with --K) K_slide."""
    from rich.table import Table

    from slidesparse.core.sparsity import describe

    table = Table(title="SlideSparse patterns" + (f" at K={k}" if k else ""))
    for col in ("pattern", "paper", "non-zeros", "expansion", "ideal speedup"):
        table.add_column(col, justify="right")
    if k:
        table.add_column("K_slide", justify="right")
        table.add_column("stored/row", justify="right")
    for p in sparsity:
        d = describe(p, k)
        cells = [
            d["pattern"],
            d["paper"],
            f"{d['nonzero_share']:.0%}",
            f"{d['expansion']:.3f}x",
            f"{d['ideal_speedup']:.3f}x",
        ]
        if k:
            cells += [str(d["K_slide"]), str(d["compressed_values"])]
        table.add_row(*cells)
    console().print(table)


commands = [patterns_command]
