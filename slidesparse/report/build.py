"""Markdown reports from a results store: per-GPU kernel and end-to-end reports, cross-GPU.

The only module that knows Jinja. It builds a language-neutral context from
:mod:`slidesparse.report.tables` (numbers already formatted, words as ``@key`` markers) and renders
``report_templates/<kind>.<lang>.md.j2``; the templates hold every word. Figures come from
:mod:`slidesparse.report.plots`. Nothing is written per run by hand: every number is the store's.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from slidesparse.core.atomic import atomic_write_text
from slidesparse.core.errors import UserError
from slidesparse.report import failures, frames
from slidesparse.report.e2e import e2e_context
from slidesparse.report.render import _MODEL_LEVEL, LANGS, render
from slidesparse.report.sections import (
    cross_context,
    failure_details,
    file_stats,
    header,
    kernel_context,
    pass_tables,
    summary,
    task_times_table,
)
from slidesparse.results.store import Store, StoreWarning

# ---------------------------------------------------------------------- entry point


def build_reports(
    results: Path | str,
    out_dir: Path | str,
    *,
    gpu: list[str] | None = None,
    lang: str = "en",
    generated_at: str | None = None,
    plots: bool = True,
) -> list[Path]:
    """Write the reports of the store at ``results`` into ``out_dir``; return their paths.

    One kernel report and/or one end-to-end report per GPU tag (``gpu`` limits the tags),
    and a cross-GPU report when more than one tag is reported. ``generated_at`` is printed
    in the footer (omitted when None, so that output is reproducible).
    """
    if lang not in LANGS:
        raise UserError(f"unknown report language {lang!r}; valid: {', '.join(LANGS)}")
    store = Store(results)
    if not store.root.is_dir():
        raise UserError(f"{store.root}: no such results folder")
    tags = store.gpu_tags()
    if not tags and any(store.root.iterdir()):
        raise UserError(
            f"{store.root}: not a results store (no GPU tag folder with parts/ or machine.json);"
            " pass the folder that run-matrix, merge or import-legacy wrote"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if gpu:
        unknown = [t for t in gpu if t not in tags]
        if unknown:
            known = ", ".join(tags) or "none"
            raise UserError(f"no results for GPU tag {unknown[0]!r}; tags in {store.root}: {known}")
        tags = [t for t in tags if t in gpu]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreWarning)
        frame = frames.plain(store.read())
    problems = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
    for text in problems:  # on stderr too, one line each
        warnings.warn(text, StoreWarning, stacklevel=2)
    frame = frame[frame["gpu_tag"].isin(tags)] if len(frame) else frame
    base = {"lang": lang, "generated_at": generated_at, "results": str(store.root)}
    base["problems"] = problems
    written = []
    if frame.empty:
        path = out / f"report.{lang}.md"
        return [_write(path, render("empty", lang, {**base, "tags": tags}))]
    cells = frames.resolve_cells(frame)
    for tag in tags:
        rows, tc = frame[frame["gpu_tag"] == tag], cells[cells["gpu_tag"] == tag]
        for kind in ("kernel", "e2e"):
            is_e2e = kind == "e2e"
            kind_rows = rows[rows["task"].isin(_MODEL_LEVEL) == is_e2e]
            kind_cells = tc[tc["task"].isin(_MODEL_LEVEL) == is_e2e]
            if kind_cells.empty:
                continue
            stem = f"{tag}.{kind}"
            groups = failures.failure_groups(kind_cells)
            skips = failures.skip_groups(kind_cells)
            ctx = {
                **base,
                "h": header(store, tag, kind_rows),
                "files": file_stats(store, tag, kind_rows),
                "times": task_times_table(kind_rows),
                "summary": summary(kind_cells, ["task"] if is_e2e else ["task", "backend", "mode"]),
                "passes": pass_tables(kind_cells, kind_cells["task"].unique()),
                "failures": failure_details(kind_cells, groups),
                "skip_groups": skips,
            }
            cpu = ctx["h"]["cpu"]
            if is_e2e:  # beside the kernel-level totals of the same GPU
                kernel = tc[~tc["task"].isin(_MODEL_LEVEL)]
                ctx.update(e2e_context(kind_cells, out, stem, plots, cpu, kernel))
            else:
                ctx.update(kernel_context(kind_cells, out, stem, plots, cpu))
            written.append(_write(out / f"{stem}.{lang}.md", render(kind, lang, ctx)))
    if len(tags) > 1:
        ctx = {**base, **cross_context(cells, store, tags, out, plots)}
        written.append(_write(out / f"cross_gpu.{lang}.md", render("cross_gpu", lang, ctx)))
    return written


def _write(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    os.chmod(path, 0o644)  # a report is for reading: not the temp file's private mode
    return path
