"""``plan``: count a matrix's cells by task and state, with an estimated time."""

from __future__ import annotations

import click

from slidesparse.commands.options import matrix_options, run_options
from slidesparse.run.progress import fmt_seconds

_STATES = ("run", "skip", "done", "failed", "skipped")


def print_warnings(plan) -> None:
    """The store problems met while planning, one line each."""
    for text in plan.warnings:
        click.echo(f"warning: {text}", err=True)


def print_plan(plan, n_workers: int) -> None:
    """The plan's cells per task and state, the estimate and the skip reasons."""
    counts = plan.counts()
    click.echo(f"matrix {plan.source} on {plan.machine.gpu_tag}: {len(plan.cells)} cells")
    click.echo(f"  {'task':<14}" + "".join(f"{s:>9}" for s in _STATES))
    for task, c in counts.items():
        click.echo(f"  {task:<14}" + "".join(f"{c.get(s, 0):>9}" for s in _STATES))
    click.echo(
        "  (run: will run; skip: recorded skipped by the GPU rules; done/failed/skipped: "
        "latest stored row, kept)"
    )
    seconds, unknown, modelled, model_s = plan.estimate(n_workers)
    n_run = len(plan.to_run())
    if n_run and unknown < n_run:
        # The cost model is calibrated on one GPU (an H200): state how far it may be off.
        span = (
            f", good to about 2x: {fmt_seconds(seconds - model_s / 2)}-"
            f"{fmt_seconds(seconds + model_s)}"
            if modelled
            else ""
        )
        notes = [f"{modelled} cells from the cost model{span}"] if modelled else []
        notes += [f"+{unknown} cells without earlier timings or a model"] if unknown else []
        note = f" ({'; '.join(notes)})" if notes else ""
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
@matrix_options
def plan_cmd(**kw) -> None:
    """Count the cells of a matrix by task and state, with an estimated time."""
    from slidesparse.run.runner import make_plan, worker_slots

    preset = kw.pop("preset")
    options = run_options(**kw)
    plan = make_plan(preset, options)
    print_warnings(plan)
    print_plan(
        plan,
        len(worker_slots(plan, options)),
    )


commands = [plan_cmd]
