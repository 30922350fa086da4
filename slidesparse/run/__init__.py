"""Running a matrix: load and expand it, plan against the store, dispatch cells to workers.

* :mod:`~slidesparse.run.matrix`: matrix files, cells, cell ids, shards.
* :mod:`~slidesparse.run.rules`: per-GPU skip rules (numbers in ``gpu_rules.yaml``).
* :mod:`~slidesparse.run.runner`: plans and runs (``make_plan``, ``run_plan``).
* :mod:`~slidesparse.run.pool` / :mod:`~slidesparse.run.worker`: one warm worker process per
  GPU, replaced when a cell kills it. :mod:`~slidesparse.run.progress`: what the user sees.

Nothing here knows a task by name: tasks describe themselves (:mod:`slidesparse.tasks`).
"""

__all__ = ["matrix", "pool", "progress", "rules", "runner", "worker"]
