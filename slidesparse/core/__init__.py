"""The bottom layer: what every subsystem shares and nothing in it depends on the rest.

* :mod:`~slidesparse.core.errors`: the one user-facing error (exit 2), skips, store warnings.
* :mod:`~slidesparse.core.sparsity`: patterns, pruning, the slide transform, K_slide.
* :mod:`~slidesparse.core.models`: the model shapes the benchmarks run.
* :mod:`~slidesparse.core.dtypes`: dtype names, byte widths, torch storage types.
* :mod:`~slidesparse.core.hardware`: machine identity, GPU tags, capabilities, versions.
* :mod:`~slidesparse.core.metrics`: speedup, bound, efficiency, the suspect margin.
* :mod:`~slidesparse.core.timing`: how a GPU or CPU call is timed and summarized.
* :mod:`~slidesparse.core.faults`: classifying crashes and errors; ``core.process``: child
  lifetime; ``core.atomic``: atomic writes; ``core.verify``: the slide checked per model.
"""

__all__ = [
    "atomic",
    "dtypes",
    "errors",
    "faults",
    "hardware",
    "metrics",
    "models",
    "process",
    "sparsity",
    "timing",
    "verify",
]
