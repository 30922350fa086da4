"""``run-matrix``: run a matrix in isolated workers, resumable, every cell recorded."""

from __future__ import annotations

import click

from slidesparse.commands.options import matrix_options, run_options, target_spread_option
from slidesparse.commands.plan import print_plan, print_warnings
from slidesparse.run.progress import fmt_seconds


@click.command("run-matrix")
@matrix_options
@click.option("--dry-run", is_flag=True, help="Show what would run and stop.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Per-cell timeout in seconds for every cell (default: per task).",
)
@target_spread_option(
    None,
    "Relative spread of the median every timing samples until, for every cell "
    "(default: the matrix's target_spread, else 0.01).",
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

    preset = kw.pop("preset")
    options = run_options(**kw)
    plan = make_plan(preset, options)
    print_warnings(plan)
    n_workers = len(worker_slots(plan, options))
    if dry_run:
        print_plan(plan, n_workers)
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


commands = [run_matrix_cmd]
