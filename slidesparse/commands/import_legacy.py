"""``import-legacy``: the original research scripts' result folders into a store."""

from __future__ import annotations

import warnings
from pathlib import Path

import click


@click.command("import-legacy")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--results",
    type=click.Path(path_type=Path),
    default=Path("results"),
    show_default=True,
    help="Store to import into.",
)
def import_legacy_cmd(path: Path, results: Path):
    """Import the original research scripts' result folders under PATH into a store."""
    from slidesparse.results.legacy import import_legacy
    from slidesparse.results.store import Store

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = import_legacy(path, Store(results))
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    for tag, counts in sorted(summary.rows.items()):
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        click.echo(f"{tag}: {parts}")
    click.echo(f"{summary.files_read} files read, {len(summary.skipped)} skipped")


commands = [import_legacy_cmd]
