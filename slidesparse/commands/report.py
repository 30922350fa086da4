"""``slidesparse report``, ``merge`` and ``import-legacy``: turn stores into what people read."""

from __future__ import annotations

import warnings
from pathlib import Path

import click


@click.command("report")
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--gpu", "gpus", multiple=True, help="GPU tag to report (repeatable); default all.")
@click.option("--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True)
@click.option(
    "--out", "out", type=click.Path(path_type=Path), default=None, help="Default: RESULTS/reports."
)
@click.option("--no-plots", is_flag=True, help="Skip the PNG figures.")
def report_cmd(results: Path, gpus: tuple[str, ...], lang: str, out: Path | None, no_plots: bool):
    """Write markdown reports (per GPU, and cross-GPU with several tags) from RESULTS."""
    from slidesparse.report.build import build_reports

    paths = build_reports(
        results,
        out or Path(results) / "reports",
        gpu=list(gpus) or None,
        lang=lang,
        plots=not no_plots,
    )
    for p in paths:
        click.echo(str(p))


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


commands = [report_cmd, merge_cmd, import_legacy_cmd]
