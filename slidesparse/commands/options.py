"""Click parameter types and options shared by several commands."""

from __future__ import annotations

from pathlib import Path

import click

from slidesparse.core.errors import UserError
from slidesparse.run.matrix import parse_shard, preset_names


class SparsityList(click.ParamType):
    """A comma-separated list of patterns (``2_4,6:8,2_inf``, ``all``), parsed and canonical."""

    name = "sparsity"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        from slidesparse.core.sparsity import parse_patterns

        try:
            return parse_patterns(value)
        except UserError as exc:
            self.fail(str(exc), param, ctx)


K_OPTION = click.option(
    "--K", "k", type=click.IntRange(min=1), default=None, help="Show K_slide for this K."
)
SPARSITY_OPTION = click.option(
    "--sparsity",
    type=SparsityList(),
    default="dense,all",
    show_default=True,
    help="Comma-separated patterns: 2_L, (L-2):L, 2_inf, dense, or all.",
)


def target_spread_option(default: float | None, help: str):
    """``--target-spread``: the relative spread of the median that every adaptive timing
    samples until (core/timing.py); 0.01 is ±1% of the median."""
    return click.option(
        "--target-spread",
        type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
        default=default,
        show_default=default is not None,
        help=help,
    )


def results_option(fn):
    return click.option(
        "--results",
        "results",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="SLIDESPARSE_RESULTS",
        default=Path("results"),
        show_default=True,
        help="Results root (one folder per GPU tag). Env: SLIDESPARSE_RESULTS.",
    )(fn)


def matrix_options(fn):
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
        results_option,
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def run_options(**kw):
    """RunOptions from the parsed matrix options (after ``--preset`` was popped)."""
    from slidesparse.run.runner import RunOptions

    shard = kw.pop("shard")
    return RunOptions(
        shard=parse_shard(shard) if shard else None, tasks=tuple(kw.pop("tasks")), **kw
    )


def csv(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated option value."""
    return [t.strip() for t in text.split(",") if t.strip()]


def int_list(text: str, name: str = "M") -> list[int]:
    """Comma-separated positive integers of option ``--name``; UserError otherwise."""
    try:
        values = [int(t) for t in csv(text)]
    except ValueError:
        raise UserError(f"--{name} {text!r}: give comma-separated positive integers") from None
    if not values or any(v <= 0 for v in values):
        raise UserError(f"--{name} {text!r}: give comma-separated positive integers")
    return values


def console():
    """A rich Console for tables: the terminal's width, or unlimited when output is piped or
    logged, so that no cell is cut to "…" in a file."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=10_000)
