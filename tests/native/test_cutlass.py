"""The CUTLASS library's build configuration, and a real build of it where nvcc is.

The library is sm90a device code compiled by nvcc against the ``nvidia-cutlass`` headers; it
needs no GPU to build, and its C API answers configuration queries without one (it links the
CUDA runtime statically and touches the device only in a GEMM). So wherever nvcc and the
headers are (CI's machine has both), the full build runs and the built library is loaded
and asked for its configurations; elsewhere the test skips with the reason.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

from slidesparse.core.errors import UserError
from slidesparse.native import cutlass


def test_sources_are_found_and_hashed():
    d = cutlass.source_dir()
    for name in (*cutlass.SOURCES, *cutlass.HEADERS):
        assert (d / name).is_file(), name
    assert sorted(p.name for p in d.iterdir() if p.suffix in (".cu", ".cuh", ".inc")) == sorted(
        (*cutlass.SOURCES, *cutlass.HEADERS)
    )
    assert len(cutlass.sources_hash()) == 12


def test_headers_override_and_missing(tmp_path, monkeypatch):
    root = tmp_path / "cutlass"
    (root / "include" / "cutlass").mkdir(parents=True)
    (root / "include" / "cutlass" / "cutlass.h").write_text("")
    assert cutlass.include_dirs(str(root))[0] == root / "include"
    with pytest.raises(UserError, match=cutlass.ENV_CUTLASS):
        cutlass.include_dirs(str(tmp_path / "nothing"))


def test_compile_command_targets_sm90a_and_hides_symbols(tmp_path):
    config = cutlass.BuildConfig(
        Path("/cuda/bin/nvcc"), "13.0", (tmp_path / "inc",), cutlass.ARCHS, tmp_path / "b"
    )
    cmd = config.compile_command(Path("a.cu"), Path("a.o"))
    assert "-gencode=arch=compute_90a,code=sm_90a" in cmd
    assert "-Xcompiler=-fvisibility=hidden" in cmd and f"-I{tmp_path / 'inc'}" in cmd
    link = config.link_command([Path("a.o")], Path("lib.so"))
    assert "-cudart=static" in link and not any(a.startswith("-lcuda") for a in link)


@pytest.mark.parametrize(
    ("cc", "ok"),
    [((9, 0), True), ((8, 9), False), ((10, 0), False), ((12, 1), False), (None, False)],
)
def test_only_hopper_runs_the_sm90a_kernels(cc, ok):
    assert (cutlass.unsupported_reason(cc) is None) is ok


def test_family_ids_cover_both_operands_dense_and_sparse():
    assert {cutlass.family(d, s) for d in ("int8", "fp8") for s in (False, True)} == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="no CUTLASS family"):
        cutlass.family("bf16", False)


def _toolchain() -> str | None:
    if shutil.which("nvcc") is None:
        return "nvcc not on PATH"
    if importlib.util.find_spec("cutlass_library") is None:
        return "nvidia-cutlass (the CUTLASS headers) not installed"
    return None


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_full_build_loads_and_lists_its_configurations(tmp_path):
    why = _toolchain()
    if why:
        pytest.skip(why)
    config = cutlass.BuildConfig.detect(build_dir=tmp_path / "build")
    lib_path = cutlass.build(config)
    assert lib_path.is_file() and not list(tmp_path.glob(".cutlass-*"))  # scratch cleaned
    exported = subprocess.run(
        ["nm", "-D", "--defined-only", str(lib_path)], capture_output=True, text=True, check=True
    ).stdout
    api = {ln.split()[-1] for ln in exported.splitlines() if " T " in ln}
    assert {"ss_cutlass_gemm", "ss_cutlass_compress", "ss_cutlass_num_configs"} <= api
    assert not [s for s in api if "cutlass" in s and not s.startswith("ss_cutlass_")]
    import ctypes

    lib = ctypes.CDLL(str(lib_path))
    cutlass._declare(lib)
    assert lib.ss_cutlass_api_version() == cutlass.API_VERSION
    for (dtype, sparse), fam in cutlass.FAMILIES.items():
        names = [
            lib.ss_cutlass_config_name(fam, i).decode()
            for i in range(lib.ss_cutlass_num_configs(fam))
        ]
        assert len(names) >= 4 and len(set(names)) == len(names), (dtype, sparse, names)
        # A sparse GEMM runs the weight as CUTLASS's sparse A: always swapped.
        assert all(n.startswith("swap_") for n in names) or not sparse
    assert lib.ss_cutlass_num_configs(99) == 0 and lib.ss_cutlass_config_name(0, 99) is None
