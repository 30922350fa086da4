"""``run-matrix``, ``plan`` and ``results``: thin wrappers over :mod:`slidesparse.run.runner`."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from slidesparse.core.errors import UserError
from slidesparse.run.matrix import parse_shard, preset_names
from slidesparse.run.progress import fmt_seconds

_STATES = ("run", "skip", "done", "failed", "skipped")


def _results_option(fn):
    return click.option(
        "--results",
        "results",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="SLIDESPARSE_RESULTS",
        default=Path("results"),
        show_default=True,
        help="Results root (one folder per GPU tag). Env: SLIDESPARSE_RESULTS.",
    )(fn)


def _matrix_options(fn):
    options = [
        click.option(
            "--preset",
            default="smoke",
            show_default=True,
            help=f"Matrix preset ({', '.join(preset_names())}) or a path to a matrix .yaml.",
        ),
        click.option("--shard", default=None, help="Run shard i/n of the matrix (0 <= i < n)."),
        click.option("--task", "tasks", multiple=True, help="Only cells of this task (repeat)."),
        click.option(
            "--gpus",
            default="all",
            show_default=True,
            help="'all' or device indices (0,1): one warm worker per GPU.",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Worker processes on a machine without GPUs.",
        ),
        click.option("--retry-failed", is_flag=True, help="Rerun cells whose latest row failed."),
        click.option(
            "--retry-skipped", is_flag=True, help="Rerun cells whose latest row is skipped."
        ),
        click.option("--rerun-all", is_flag=True, help="Rerun every cell, even those done."),
        click.option(
            "--machine",
            "machine_file",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Plan/run against this machine.json instead of detecting the machine.",
        ),
        _results_option,
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def _options(**kw):
    from slidesparse.run.runner import RunOptions

    shard = kw.pop("shard")
    return RunOptions(
        shard=parse_shard(shard) if shard else None, tasks=tuple(kw.pop("tasks")), **kw
    )


def _print_warnings(plan) -> None:
    for text in plan.warnings:
        click.echo(f"warning: {text}", err=True)


def _print_plan(plan, n_workers: int) -> None:
    counts = plan.counts()
    click.echo(f"matrix {plan.source} on {plan.machine.gpu_tag}: {len(plan.cells)} cells")
    click.echo(f"  {'task':<14}" + "".join(f"{s:>9}" for s in _STATES))
    for task, c in counts.items():
        click.echo(f"  {task:<14}" + "".join(f"{c.get(s, 0):>9}" for s in _STATES))
    click.echo(
        "  (run: will run; skip: recorded skipped by the GPU rules; done/failed/skipped: "
        "latest stored row, kept)"
    )
    seconds, unknown = plan.estimate(n_workers)
    n_run = len(plan.to_run())
    if n_run and unknown < n_run:
        note = f" (+{unknown} cells without earlier timings)" if unknown else ""
        click.echo(f"estimated time: {fmt_seconds(seconds)} on {n_workers} worker(s){note}")
    elif n_run:
        click.echo("estimated time: unknown (no earlier runs of these tasks in the store)")
    reasons: dict[str, int] = {}
    for cell in plan.to_skip():
        reasons[cell.skip_reason] = reasons.get(cell.skip_reason, 0) + 1
    ranked = sorted(reasons.items(), key=lambda kv: -kv[1])
    for reason, n in ranked[:5]:
        click.echo(f"  skip {n:>5} x {reason}")
    if len(ranked) > 5:
        rest = sum(n for _, n in ranked[5:])
        click.echo(f"  skip {rest:>5} x {len(ranked) - 5} other reasons (see --dry-run)")


@click.command("plan")
@_matrix_options
def plan_cmd(**kw) -> None:
    """Count the cells of a matrix by task and state, with an estimated time."""
    from slidesparse.run.runner import make_plan, worker_slots

    preset = _preset(kw)
    options = _options(**kw)
    plan = make_plan(preset, options)
    _print_warnings(plan)
    _print_plan(
        plan,
        len(worker_slots(plan, options)),
    )


def _preset(kw) -> str:
    return kw.pop("preset")


@click.command("run-matrix")
@_matrix_options
@click.option("--dry-run", is_flag=True, help="Show what would run and stop.")
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=None,
    help="Per-cell timeout in seconds for every cell (default: per task).",
)
@click.option(
    "--progress",
    type=click.Choice(["auto", "rich", "plain", "none"]),
    default="auto",
    show_default=True,
    help="Progress display.",
)
def run_matrix_cmd(dry_run: bool, **kw) -> int:
    """Run a matrix preset: isolated workers per GPU, resumable, every cell recorded."""
    from slidesparse.run.runner import make_plan, run_plan, worker_slots

    preset = _preset(kw)
    options = _options(**kw)
    plan = make_plan(preset, options)
    _print_warnings(plan)
    n_workers = len(worker_slots(plan, options))
    if dry_run:
        _print_plan(plan, n_workers)
        for cell in plan.to_run():
            click.echo(f"would run {cell.cell_id}  {cell.describe()}")
        for cell in plan.to_skip():
            click.echo(f"would skip {cell.cell_id}  {cell.describe()}: {cell.skip_reason}")
        return 0
    summary = run_plan(plan, options)
    c = summary.counts
    click.echo(
        f"run {summary.run_id} on {summary.gpu_tag}: {c['ok']} ok, {c['failed']} failed, "
        f"{c['skipped']} skipped in {fmt_seconds(summary.duration_s)}"
        + (
            f"; {summary.kept_failed} failed earlier (use --retry-failed)"
            if summary.kept_failed
            else ""
        )
    )
    for label, error_class, detail in summary.failures[:20]:
        click.echo(f"  failed [{error_class}] {label}: {detail}")
    if len(summary.failures) > 20:
        click.echo(f"  ... and {len(summary.failures) - 20} more (see {summary.event_log})")
    click.echo(f"results: {options.results / summary.gpu_tag}   events: {summary.event_log}")
    if summary.interrupted:
        click.echo("interrupted: run the same command again to resume", err=True)
    return summary.exit_code


@click.command("results")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@_results_option
def results_cmd(directory: Path | None, results: Path) -> None:
    """Summarize a results directory: per GPU tag, cells by task and status."""
    from slidesparse.results.store import Store, StoreWarning, summarize

    store = Store(directory or results)
    if not store.root.is_dir():
        raise UserError(f"{store.root}: no such results folder; pass the folder run-matrix wrote")
    tags = store.gpu_tags()
    if not tags:
        click.echo(f"no results under {store.root}")
        return
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


commands = [run_matrix_cmd, plan_cmd, results_cmd]
