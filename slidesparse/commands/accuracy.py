"""``accuracy``: perplexity per pattern and slid-vs-pruned exactness, stored as task rows."""

from __future__ import annotations

import json
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
    from rich.table import Table

    from slidesparse.results.store import Store, latest_per_cell

    frame = Store(results).read(tag)
    if frame.empty:
        return
    rows = latest_per_cell(frame[frame["cell_id"].isin(cell_ids)])
    rows = rows[rows["status"] == "ok"]
    extra = [json.loads(e) if isinstance(e, str) else {} for e in rows["extra"]]
    pairs = list(zip(rows.itertuples(), extra, strict=True))
    dense = {
        (r.dtype, x.get("text_sha256"), x.get("window")): x.get("perplexity")
        for r, x in pairs
        if r.sparsity == "dense"
    }
    cols = ("pattern", "perplexity", "x dense", "max |Δlogit| slid vs pruned", "greedy equal")
    table = Table(*cols, title=f"accuracy on {tag}")
    for r, x in sorted(pairs, key=lambda t: t[0].sparsity):
        base = dense.get((r.dtype, x.get("text_sha256"), x.get("window")))
        ratio = f"{x['perplexity'] / base:.3f}" if base else "-"
        agree = x.get("greedy_agree")
        table.add_row(
            r.sparsity,
            f"{x['perplexity']:.3f}",
            ratio,
            "-" if x.get("max_abs_dlogit") is None else f"{x['max_abs_dlogit']:.4g}",
            "-" if agree is None else f"{agree:.0%} of {x['greedy_tokens']}",
        )
    console().print(table)


commands = [accuracy_cmd]
