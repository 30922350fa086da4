"""GPU: every backend x dtype x pattern correct against the fp64 reference; cache reuse."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from slidesparse.core.sparsity import ALL_SPARSE
from slidesparse.tasks import TaskContext, get_task

pytestmark = pytest.mark.gpu

DTYPES = ("fp16", "bf16", "int8", "fp8")
# 16-bit 2:4 cells run in a child process: on an H100 and an H200 (torch 2.11, cuSPARSELt
# 0.8.0) fp16 cusparselt cells died with "an illegal instruction" during their search, which
# would take every later test with it. The candidates are now vetted crash-isolated first
# (slidesparse.gemm.probe.vet, verdicts shared through the module's cache dir); the child stays
# so that a fault the vetting misses fails one test, not the session.
ISOLATED_DTYPES = ("fp16", "bf16")
_CHILD = """
import json, sys
from pathlib import Path
from slidesparse.tasks import TaskContext, get_task
params = json.loads(sys.argv[1])
ctx = TaskContext(device="cuda", gpu_tag="gpu_test", cache_dir=Path(sys.argv[2]))
print(json.dumps(get_task("kernel-gemm").fn(params, ctx)[0], default=str))
"""


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return TaskContext(device="cuda", gpu_tag="gpu_test", cache_dir=tmp_path_factory.mktemp("c"))


def _cell(ctx, **params):
    base = {"mode": "square", "M": 256, "N": 512, "K": 1000}  # K not a multiple of 32 or L
    return get_task("kernel-gemm").fn({**base, **params}, ctx)


@pytest.mark.parametrize("backend", ["cublaslt", "torch-builtin"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_correct(ctx, backend, dtype):
    (row,) = _cell(ctx, backend=backend, dtype=dtype, K=1024)
    assert row["backend"] == backend, row.get("extra")
    assert row["correct"], row


@pytest.mark.parametrize("pattern", ALL_SPARSE)
@pytest.mark.parametrize("backend", ["cusparselt", "torch-cslt"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_correct(ctx, backend, dtype, pattern):
    if dtype in ISOLATED_DTYPES:
        params = {"mode": "square", "M": 256, "N": 512, "K": 1000, "backend": backend,
                  "dtype": dtype, "sparsity": pattern}  # fmt: skip
        res = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(params), str(ctx.cache_dir)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert res.returncode == 0, f"child exited {res.returncode}: {res.stderr[-1500:]}"
        row = json.loads(res.stdout.strip().splitlines()[-1])
    else:
        (row,) = _cell(ctx, backend=backend, dtype=dtype, sparsity=pattern)
    assert row["backend"] == backend, row.get("extra")
    assert row["correct"], row
    assert row["alg_id"] is not None
    if backend == "cusparselt" and pattern == "2_4":
        # What the vetting left out on this GPU is part of the row.
        print(f"{dtype} {backend}: left out {row['extra']['search'].get('left_out')}")


def test_search_cache_is_reused(ctx):
    (a,) = _cell(ctx, backend="cusparselt", dtype="int8", sparsity="2_8", M=512)
    (b,) = _cell(ctx, backend="cusparselt", dtype="int8", sparsity="2_8", M=512)
    assert a["extra"]["search"]["cached"] is False
    assert b["extra"]["search"]["cached"] is True
    assert b["extra"]["config"] == a["extra"]["config"]
    fresh = TaskContext(device="cuda", gpu_tag=ctx.gpu_tag, cache_dir=ctx.cache_dir)
    (c,) = _cell(fresh, backend="cusparselt", dtype="int8", sparsity="2_8", M=512)
    assert c["extra"]["search"]["cached"] is True  # from disk, in a new worker's context
