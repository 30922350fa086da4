"""``results``: what a results folder holds, per GPU tag."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from slidesparse.commands.options import results_option
from slidesparse.core.errors import UserError

# Runs whose time accounting `results` prints, newest last.
RECENT_RUNS = 5


@click.command("results")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@results_option
@click.option(
    "--repair",
    is_flag=True,
    help="Move unreadable part files to quarantine/ and compact the parts of killed runs.",
)
def results_cmd(directory: Path | None, results: Path, repair: bool) -> None:
    """Summarize a results directory: per GPU tag, cells by task and status, and for the
    latest runs the share of their wall time spent inside cells.

    Reading never changes the folder; ``--repair`` is the one way to tidy it.
    """
    from slidesparse.results.runlog import run_stats
    from slidesparse.results.store import Store, StoreWarning, summarize

    store = Store(directory or results)
    if not store.root.is_dir():
        raise UserError(f"{store.root}: no such results folder; pass the folder run-matrix wrote")
    tags = store.gpu_tags()
    if not tags:
        click.echo(f"no results under {store.root}")
        return
    for tag in tags if repair else ():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StoreWarning)
            moved, compacted = store.repair(tag)
        for w in caught:
            click.echo(f"  warning: {w.message}")
        click.echo(f"{tag}: repaired: {len(moved)} quarantined, {len(compacted)} runs compacted")
    for tag in tags:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StoreWarning)
            frame = store.read(tag)
        machine = store.read_machine(tag) or {}
        runs = sorted(store.runs_dir(tag).glob("*.jsonl")) if store.runs_dir(tag).is_dir() else []
        n_cells = frame["cell_id"].nunique() if not frame.empty else 0
        click.echo(
            f"{tag}  ({machine.get('gpu_name') or 'no GPU'}): {len(frame)} rows, "
            f"{n_cells} cells, {len(store.part_files(tag))} part files, {len(runs)} runs"
        )
        for w in caught:
            click.echo(f"  warning: {w.message}")
        quarantined = list((store.tag_dir(tag) / "quarantine").glob("*"))
        if quarantined:
            click.echo(f"  {len(quarantined)} file(s) in quarantine/ (unreadable, kept aside)")
        table = summarize(frame)
        for task, grp in table.groupby("task"):
            parts = ", ".join(
                f"{int(n)} {s}" for s, n in zip(grp["status"], grp["cells"], strict=True)
            )
            click.echo(f"  {task:<14} {parts}")
        for path in runs[-RECENT_RUNS:]:
            stats = run_stats(path)
            click.echo(f"  run {stats.describe()}")
            for line in stats.details():
                click.echo(f"      {line}")


commands = [results_cmd]
