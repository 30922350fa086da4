"""The ``bench`` and ``tune`` command groups; other command modules attach subcommands."""

from __future__ import annotations

import click


@click.group()
def bench() -> None:
    """Measure kernels outside the runner and print a table."""


@click.group()
def tune() -> None:
    """Tune kernels for this GPU and save the configs in its cache."""


commands = [bench, tune]
