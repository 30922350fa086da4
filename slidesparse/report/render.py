"""Rendering: the Jinja environment over ``report_templates/`` and the number formats.

The only module that knows Jinja. Contexts are language-neutral (numbers already formatted,
words as ``@key`` markers); the templates hold every word.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from slidesparse.core.errors import UserError
from slidesparse.core.metrics import within_noise
from slidesparse.report import frames

LANGS = ("en", "zh")
_E2E = ("e2e-prefill", "e2e-decode")
# Tasks of the model-level (end-to-end) report: throughput and accuracy.
_MODEL_LEVEL = (*_E2E, "accuracy")
_MAX_LISTED = 20  # failing cells listed per failure group; the rest are counted
_MAX_REASONS = 2  # skip reasons named per summary row; the rest are counted
_MAX_TEXT = 90  # characters of an error message quoted in a table cell


def _templates_dir() -> Path:
    try:
        from importlib.resources import files

        path = Path(str(files("slidesparse.report_templates")))
        if path.is_dir():
            return path
    except (ModuleNotFoundError, TypeError):  # source tree: report_templates/ is top level
        pass
    return Path(__file__).resolve().parents[2] / "report_templates"


def _env():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(kind: str, lang: str, context: dict) -> str:
    """Render template ``<kind>.<lang>.md.j2`` with ``context``."""
    if lang not in LANGS:
        raise UserError(f"unknown report language {lang!r}; valid: {', '.join(LANGS)}")
    text = _env().get_template(f"{kind}.{lang}.md.j2").render(**context)
    # Trailing spaces go, except a markdown hard break ("  "); runs of blank lines collapse.
    lines = [
        ln.rstrip() + ("  " if ln.endswith("  ") and ln.strip() else "") for ln in text.splitlines()
    ]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


# ---------------------------------------------------------------------- formatting


def _num(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.{digits}f}"


def _speedup(
    s: float | None, suspect: bool, lo: float | None = None, hi: float | None = None
) -> str:
    """``1.23``, with its 95% interval ``1.23 (1.20–1.26)`` where it has one, ``~`` in front
    where that interval holds 1.0; a suspect value as ``(1.23)†`` (not a result, so no
    interval)."""
    if not frames.present(s):
        return "-"
    if suspect:
        return f"({s:.2f})†"
    if not (frames.present(lo) and frames.present(hi)):
        return f"{s:.2f}"
    return f"{'~' if within_noise(lo, hi) else ''}{s:.2f} ({lo:.2f}–{hi:.2f})"


def _pass_cell(ok: int, measured: int, skipped: int, icon: bool = True) -> str:
    """``ok/measured`` with a status icon; skipped cells are counted apart, never as failed."""
    if not measured:
        return f"@all_skipped:{skipped}" if skipped else "-"
    mark = ("✅" if ok == measured else "❌" if ok == 0 else "⚠️") if icon else ""
    text = f"{ok}/{measured} {mark}".rstrip()
    return f"@with_skipped:{text}:{skipped}" if skipped else text


def _text(v: Any) -> str:
    """A cell value as table text: ``-`` where nothing was recorded, never nan/None/<NA>."""
    if not frames.present(v):
        return "-"
    text = str(v).replace("|", "/").replace("\n", " ")
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _tok(v: Any) -> str:
    return _num(v, 0)


def _duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "@not_recorded"
    return f"{seconds:,.1f} s ({seconds / 3600:.2f} h)"


def _date(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC") if t else "@not_recorded"


def _model_label(model: str | None, mode: str | None = "square") -> str:
    """A model column's name: square GEMMs have no model; other model-less rows say ``-``."""
    if frames.present(model):
        return str(model)
    return "SQUARE" if mode == "square" else "-"
