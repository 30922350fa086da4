"""Results on disk: the Parquet store per GPU tag, merging stores, importing legacy data.

:mod:`~slidesparse.results.store` is the only module that touches Parquet;
:mod:`~slidesparse.results.merge` unions stores without losing or doubling a row;
:mod:`~slidesparse.results.legacy` reads the original research scripts' folders.
"""

__all__ = ["legacy", "merge", "store"]
