"""``report``: markdown reports (per GPU and cross-GPU) from a results store."""

from __future__ import annotations

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


commands = [report_cmd]
