"""Reports from a store: derived tables, failure mining, rendering and plots.

* :mod:`~slidesparse.report.frames`: store frames resolved to one row per cell, orders.
* :mod:`~slidesparse.report.speedups`: kernel, model-total and end-to-end speedups.
* :mod:`~slidesparse.report.failures`: pass tables and the factor failures share.
* :mod:`~slidesparse.report.sections` builds the contexts, :mod:`~slidesparse.report.render`
  renders them (the only module that knows Jinja), :mod:`~slidesparse.report.plots` draws.
* :func:`slidesparse.report.build.build_reports` is the entry point.
"""

__all__ = ["build", "failures", "frames", "plots", "render", "sections", "speedups"]
