"""Task ``tune``: tune one quant-kernel case on this GPU and save it to the GPU's cache.

Params are those of ``kernel-quant`` (kernel, sparsity, M, K or N, in_dtype, out_dtype).
The fastest config is merged into ``<cache_dir>/quant_kernels.json``, which later launches
on this GPU tag read before the shipped tables. One row: the best latency and its config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slidesparse.tasks import TaskContext, register_task
from slidesparse.tasks.kernel_quant import QuantAxes, case_from_params, quant_operand


class TuneAxes(QuantAxes):
    """tune: search the fused kernels' launch configs for these cases (once per GPU)."""


@register_task(
    "tune",
    axes=TuneAxes,
    default_timeout_s=900,
    needs_gpu=True,
    mode="tune",
    operand=quant_operand,
    # plan's cost model: a config sweep of one case took 0.2-1.4 s on the H200 shard of the
    # paper preset, after a worker's first Triton compiles (about 8 s, once).
    cost=lambda p: (0.0, 0.6, {"triton-compile": 8.0}),
)
def run(params: Mapping[str, Any], ctx: TaskContext) -> list[dict]:
    """Tune the case, save the record, return one row describing it."""
    from slidesparse.kernels import autotune, tuning
    from slidesparse.kernels.bench import case_columns

    case = case_from_params(params)
    record = autotune.tune_case(case)
    key = tuning.make_key(case.tuning_kernel, case.dtypes, case.size, case.M)
    tuning.save_entries(autotune.cache_path(ctx.cache_dir), ctx.gpu_tag, {key: record})
    return [
        {
            **case_columns(case),
            "mode": "tune",
            "latency_us": record["latency_us"],
            "timer": record["timer"],
            "extra": {"key": key, "config": record["config"], "candidates": record["candidates"]},
        }
    ]
