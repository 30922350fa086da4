"""Fixtures shared by the whole suite.

* Without a GPU, the Triton kernels run in Triton's CPU interpreter; it must be switched on
  before triton is first imported, hence here, at the top.
* ``device``: where kernels and engines run ("cuda", or "cpu" under the interpreter).
* ``machine``: a machine record from a few fields, as the planner and the skip rules see it.
* ``smoke_store``: a results folder written by a real ``run-matrix --preset smoke`` on this
  machine (once per session; tests copy it before they change anything).
* ``legacy_dir`` / ``seed_dir``: the shared legacy result folders and seed reports beside the
  checkout; tests that need them skip cleanly where they are absent.
"""

import os
from pathlib import Path

import pytest
import torch
from machines import make_machine

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LEGACY = SHARED / "legacy-vllmbench"
SEED = SHARED / "seed-reports"


@pytest.fixture(scope="session")
def device() -> str:
    """Where the kernels run: "cuda", or "cpu" under the interpreter."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def machine():
    """Factory: ``machine(tag, cc, memory_bytes)`` -> MachineRecord."""
    return make_machine


@pytest.fixture(scope="session")
def legacy_dir() -> Path:
    """``../shared/legacy-vllmbench`` (skips the test where it is absent)."""
    if not LEGACY.is_dir():
        pytest.skip(f"{LEGACY} not present")
    return LEGACY


@pytest.fixture(scope="session")
def seed_dir() -> Path:
    """``../shared/seed-reports`` (skips the test where it is absent)."""
    if not SEED.is_dir():
        pytest.skip(f"{SEED} not present")
    return SEED


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory) -> Path:
    """The results folder of one real ``run-matrix --preset smoke`` (read-only for tests)."""
    from slidesparse.cli import main

    results = tmp_path_factory.mktemp("smoke") / "results"
    code = main(
        ["run-matrix", "--preset", "smoke", "--results", str(results), "--progress", "none"]
    )
    assert code == 0, f"the smoke run exited {code}"
    return results
