"""Report figures (matplotlib, Agg backend, imported lazily): PNGs next to the markdown.

Every figure is at least 1200 px wide, keeps its legend outside the data and says in its own
notes what a dashed line and a suspect marker mean.
"""

from __future__ import annotations

from pathlib import Path

from slidesparse.core.atomic import atomic_write

_DPI = 150
_MIN_WIDTH_IN = 8.0  # x 150 dpi = 1200 px
_SUSPECT_NOTE = "x: suspect, above L/(L-2) by > 3% (weak dense baseline), not a result"
# Metadata without the matplotlib version keeps the PNG bytes stable across installs.
_META = {"Software": None}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def speedup_vs_m(panels: list[dict], path: Path, title: str, *, cpu: bool = False) -> Path:
    """Speedup vs M, one subplot per panel, one line per pattern plus its dashed ideal bound.

    ``panels``: ``[{"title": str, "series": {pattern: [(M, speedup), ...]}, "suspect":
    {pattern: [(M, speedup), ...]}, "ideal": {pattern: float}}]``; suspect points are drawn as
    crosses, apart from the line. ``cpu``: the figure holds CPU-reference timings.
    """
    plt = _pyplot()
    n = max(1, len(panels))
    cols = min(n, 3)
    rows = -(-n // cols)
    width = max(_MIN_WIDTH_IN, 3.6 * cols + 1.6)  # + room for the legend on the right
    fig, axes = plt.subplots(rows, cols, figsize=(width, 3.0 * rows + 1.0), squeeze=False)
    colors = plt.get_cmap("tab10")
    any_suspect = False
    for ax, panel in zip(axes.flat, panels, strict=False):
        for i, (pattern, points) in enumerate(panel["series"].items()):
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            ax.plot(xs, ys, marker="o", ms=3, lw=1.2, color=colors(i), label=pattern)
            bad = panel.get("suspect", {}).get(pattern) or []
            if bad:
                any_suspect = True
                ax.scatter([p[0] for p in bad], [p[1] for p in bad], marker="x", s=36,
                           color=colors(i), linewidths=1.5, zorder=3)  # fmt: skip
            bound = panel["ideal"].get(pattern)
            ms = xs + [p[0] for p in bad]
            if bound and ms:
                ax.hlines(bound, min(ms), max(ms), colors=colors(i), linestyles="dashed", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.axhline(1.0, color="grey", lw=0.6)
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel("M", fontsize=8)
        ax.set_ylabel("speedup vs dense", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:  # right of every subplot, never over the data
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    head = ("CPU reference timings (no GPU): " if cpu else "") + title
    fig.suptitle(head, fontsize=10, x=0.02, ha="left")
    notes = "dashed: ideal L/(L-2)" + (f"; {_SUSPECT_NOTE}" if any_suspect else "")
    fig.text(0.02, 0.005, notes, fontsize=8, ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.04, 1, 0.94))
    return _save(fig, plt, path)


def heatmap(rows: list[str], cols: list[str], values, path: Path, title: str) -> Path:
    """A GPU x pattern heatmap; ``values[i][j]`` is a float or None (not measured)."""
    import numpy as np

    plt = _pyplot()
    data = np.array([[np.nan if v is None else v for v in r] for r in values], dtype=float)
    # A tight bounding box trims the margins: start wider so the PNG stays >= 1200 px.
    size = (max(_MIN_WIDTH_IN + 1.0, 1.0 + 0.9 * len(cols)), 1.6 + 0.45 * len(rows))
    fig, ax = plt.subplots(figsize=size)
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
    try:
        # bbox "tight" grows the canvas to hold the legend placed outside the axes.
        atomic_write(
            path,
            lambda tmp: fig.savefig(
                tmp, format="png", dpi=_DPI, metadata=_META, bbox_inches="tight"
            ),
        )
    finally:
        plt.close(fig)
    return Path(path)
