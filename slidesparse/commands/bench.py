"""``bench``: the group of benchmarks run outside the matrix runner."""

from __future__ import annotations

import click


@click.group()
def bench() -> None:
    """Measure kernels outside the runner and print a table."""


commands = [bench]
