"""Typed axis fields that task modules build their matrix-block axes from.

A task's axes model subclasses :class:`Axes`: each field is one axis (a non-empty list, a
scalar meaning a one-point axis), unknown keys are errors, and ``points()`` yields the cells'
params, already filtered to meaningful combinations. The run layer validates a block against
the model its task registered and reports errors by key path.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from slidesparse.core.dtypes import DTYPES, W8A8_DTYPES

__all__ = ["Axes", "GemmDtype", "ModelName", "Sparsity", "W8A8Dtype", "axis", "product"]


def _as_list(value: Any) -> Any:
    # A scalar axis value is a one-point axis; None stays None so "missing" still errors.
    if value is None or isinstance(value, list):
        return value
    return [value]


def _canonical_sparsity(value: Any) -> str:
    from slidesparse.core.sparsity import parse_pattern

    if not isinstance(value, str | int):
        raise ValueError(f"sparsity must be a string like '2_8' or '6:8', got {value!r}")
    try:
        return parse_pattern(str(value)).name
    except Exception as exc:  # parse_pattern raises UserError; pydantic wants ValueError
        raise ValueError(str(exc)) from None


def _known_model(value: Any) -> str:
    from slidesparse.core.models import MODELS

    if value not in MODELS:
        raise ValueError(f"unknown model {value!r}; allowed: {', '.join(MODELS)}")
    return value


def axis(item_type: Any) -> Any:
    """The annotation of an axis of ``item_type`` values (at least one)."""
    return Annotated[list[item_type], BeforeValidator(_as_list), Field(min_length=1), "axis"]


Sparsity = Annotated[str, BeforeValidator(_canonical_sparsity)]
ModelName = Annotated[str, BeforeValidator(_known_model)]
GemmDtype = Literal[DTYPES]  # type: ignore[valid-type]
W8A8Dtype = Literal[W8A8_DTYPES]  # type: ignore[valid-type]


class Axes(BaseModel):
    """Base of every task's axes model: frozen, unknown keys forbidden."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def points(self) -> Iterator[dict[str, Any]]:
        """The block's cartesian product, already filtered to meaningful combinations."""
        raise NotImplementedError


def product(**axes: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Every combination of the named axes, as dicts in axis order."""
    names = list(axes)
    for values in itertools.product(*(list(axes[n]) for n in names)):
        yield dict(zip(names, values, strict=True))
