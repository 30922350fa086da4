"""Engine tests: a tiny 2-layer Llama / Qwen2 written as a real HF folder, run on the GPU when
there is one, else on the CPU with the quant kernels in Triton's interpreter.

The interpreter runs each Triton program serially in Python, so one program per 16 rows is
~10x faster than the default of one per row; a tuned-config table with such configs for the
tiny shapes is consulted while these tests run (the results are the same bit for bit: the
configs only change how rows are grouped into programs).
"""

import json

import pytest
from engine_tiny import PATTERNS, TINY_SIZES


@pytest.fixture(scope="module", autouse=True)
def interpreter_configs(tmp_path_factory):
    """Wide-program quant configs for the tiny shapes, only under the interpreter."""
    from slidesparse.kernels import numerics, tuning

    if not numerics.interpreting():
        yield
        return
    d = tmp_path_factory.mktemp("interp-tuning")
    entries = {}
    for out in ("int8", "fp8"):
        for K in TINY_SIZES:
            cfg = {"ROWS": 16, "BLOCK": 1024, "num_warps": 4}
            entries[tuning.make_key("quant_only", f"bf16->{out}", K, 16)] = {"config": cfg}
            for p in PATTERNS:
                entries[tuning.make_key(f"quant_slide_{p}", f"bf16->{out}", K, 16)] = {
                    "config": cfg
                }
    for acc in ("int32", "bf16"):
        for N in TINY_SIZES:
            cfg = {"BLOCK_M": 64, "BLOCK_N": 512, "num_warps": 4}
            entries[tuning.make_key("dequant_bias", f"{acc}->bf16", N, 16)] = {"config": cfg}
    table = {"schema_version": tuning.SCHEMA_VERSION, "gpu_tag": "interpreter", "entries": entries}
    (d / tuning.CACHE_FILE).write_text(json.dumps(table))
    tuning.use(cache_dir=d)
    yield
    tuning.use()
