"""``accuracy``: perplexity per pattern and slid-vs-pruned exactness, stored as task rows."""

from __future__ import annotations

from pathlib import Path

import click

from slidesparse.commands.options import console, csv, results_option


@click.command("accuracy")
@click.argument("model")
@click.option("--sparsity", default="dense,2_4,2_6,2_8", show_default=True)
@click.option(
    "--dtype",
    type=click.Choice(["int8", "fp8"]),
    default=None,
    help="W8A8 dtype [default: a W8A8 checkpoint's own, else int8].",
)
@click.option("--text", type=click.Path(dir_okay=False), default=None, help="UTF-8 text file.")
@click.option("--window", type=click.IntRange(min=2), default=256, show_default=True)
@click.option("--new-tokens", type=click.IntRange(min=1), default=32, show_default=True)
@results_option
@click.option("--progress", type=click.Choice(["auto", "rich", "plain", "none"]), default="none")
def accuracy_cmd(model, sparsity, dtype, text, window, new_tokens, results, progress) -> int:
    """Perplexity of MODEL (a checkpoint folder or Hugging Face id) pruned to each pattern,
    and the slid engine's agreement with the pruned one; rows go to the results store."""
    import yaml

    from slidesparse.core.sparsity import parse_pattern
    from slidesparse.engine.convert import resolve_source
    from slidesparse.engine.generate import checkpoint_dtype
    from slidesparse.run.matrix import parse_matrix
    from slidesparse.run.runner import RunOptions, make_plan, run_plan

    folder = resolve_source(model)
    dtype = dtype or checkpoint_dtype(folder) or "int8"
    patterns = [parse_pattern(p).name for p in csv(sparsity)]
    if text is not None:
        text = str(Path(text).resolve())
    axes = {"model": [str(folder)], "dtype": [dtype], "sparsity": patterns}
    axes.update(window=window, new_tokens=new_tokens, text=text)
    block = {"name": "accuracy", "task": "accuracy", "axes": axes}
    label = f"accuracy {model}"
    matrix = parse_matrix(yaml.safe_dump({"blocks": [block]}), label)
    options = RunOptions(results=results, progress=progress)
    plan = make_plan(label, options, matrix=matrix)
    summary = run_plan(plan, options)
    _print(options.results, summary.gpu_tag, {c.cell.cell_id for c in plan.cells})
    for lbl, error_class, detail in summary.failures:
        click.echo(f"failed [{error_class}] {lbl}: {detail}", err=True)
    return summary.exit_code


def _print(results: Path, tag: str, cell_ids: set[str]) -> None:
    """This run's cells as the report's accuracy tables (one per model, dtype and text)."""
    from rich.table import Table

    from slidesparse.report.e2e import accuracy
    from slidesparse.report.frames import plain, resolve_cells
    from slidesparse.results.store import Store

    frame = Store(results).read(tag)
    if frame.empty:
        return
    cells = resolve_cells(plain(frame[frame["cell_id"].isin(cell_ids)]))
    cols = ("pattern", "perplexity", "x dense", "max |Δlogit| slid vs pruned", "greedy equal")
    for group in accuracy(cells):
        title = f"accuracy on {tag}: {group['model']} {group['dtype']}, {group['text']}"
        table = Table(*cols, title=title)
        for row in group["rows"]:
            table.add_row(*row)
        console().print(table)


commands = [accuracy_cmd]
