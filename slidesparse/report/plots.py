"""Report figures (matplotlib, Agg backend, imported lazily): small PNGs next to the markdown."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_DPI = 90
# Metadata without the matplotlib version keeps the PNG bytes stable across installs.
_META = {"Software": None}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def speedup_vs_m(panels: list[dict], path: Path, title: str) -> Path:
    """Speedup vs M, one subplot per panel, one line per pattern plus its dashed ideal bound.

    ``panels``: ``[{"title": str, "series": {pattern: [(M, speedup), ...]}, "ideal":
    {pattern: float}}]``.
    """
    plt = _pyplot()
    n = max(1, len(panels))
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, panel in zip(axes.flat, panels, strict=False):
        for i, (pattern, points) in enumerate(panel["series"].items()):
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            ax.plot(xs, ys, marker="o", ms=3, lw=1.2, color=colors(i), label=pattern)
            bound = panel["ideal"].get(pattern)
            if bound and xs:
                ax.hlines(bound, min(xs), max(xs), colors=colors(i), linestyles="dashed", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.axhline(1.0, color="grey", lw=0.6)
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel("M", fontsize=8)
        ax.set_ylabel("speedup vs dense", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=7, ncol=min(len(labels), 8))
    fig.suptitle(title + "  (dashed: ideal L/(L-2))", fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, plt, path)


def heatmap(rows: list[str], cols: list[str], values, path: Path, title: str) -> Path:
    """A GPU x pattern heatmap; ``values[i][j]`` is a float or None (not measured)."""
    import numpy as np

    plt = _pyplot()
    data = np.array([[np.nan if v is None else v for v in r] for r in values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(cols), 0.9 + 0.45 * len(rows)))
    im = ax.imshow(data, cmap="RdYlGn", vmin=0.5, vmax=2.0, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if not np.isnan(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=_DPI, metadata=_META)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
