"""``tune``: the group of tuning commands."""

from __future__ import annotations

import click


@click.group()
def tune() -> None:
    """Tune kernels for this GPU and save the configs in its cache."""


commands = [tune]
