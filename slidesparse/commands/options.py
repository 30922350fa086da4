"""Click parameter types and options shared by several commands."""

from __future__ import annotations

import click

from slidesparse.core.errors import UserError


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
