"""The CUTLASS library's build configuration, and a real build of it where nvcc is.

The library is device code of one target (sm90a, sm100a, sm120a, sm121a) compiled by nvcc
against the ``nvidia-cutlass`` headers; it needs no GPU to build, and its C API answers
configuration queries without one (it links the CUDA runtime statically and touches the
device only in a GEMM). So wherever nvcc and the headers are (CI's machine has both), every
target's full build runs and each built library is loaded and asked for its configurations;
elsewhere the test skips with the reason.
"""

from __future__ import annotations

import importlib.util
import re
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
    # Every file in the folder belongs to some target: none is left out of a build or hash.
    assert sorted(p.name for p in d.iterdir() if p.suffix in (".cu", ".cuh", ".inc")) == sorted(
        (*cutlass.SOURCES, *cutlass.HEADERS)
    )
    hashes = {a: cutlass.sources_hash(cutlass.ARCHS[a]) for a in cutlass.ARCHS}
    assert all(len(h) == 12 for h in hashes.values())
    assert hashes["120a"] == hashes["121a"] != hashes["90a"] != hashes["100a"]
    dirs = {cutlass.default_build_dir(a).name for a in cutlass.ARCHS.values()}
    assert len(dirs) == len(cutlass.ARCHS)  # one library per target, even on shared sources


def test_headers_override_and_missing(tmp_path, monkeypatch):
    root = tmp_path / "cutlass"
    (root / "include" / "cutlass").mkdir(parents=True)
    (root / "include" / "cutlass" / "cutlass.h").write_text("")
    assert cutlass.include_dirs(str(root))[0] == root / "include"
    with pytest.raises(UserError, match=cutlass.ENV_CUTLASS):
        cutlass.include_dirs(str(tmp_path / "nothing"))


@pytest.mark.parametrize(("arch", "int8"), [("90a", True), ("100a", True), ("120a", False)])
def test_compile_command_targets_one_arch_and_hides_symbols(tmp_path, arch, int8):
    target = cutlass.ARCHS[arch]
    config = cutlass.BuildConfig(
        Path("/cuda/bin/nvcc"), "13.0", (tmp_path / "inc",), target, tmp_path / "b"
    )
    cmd = config.compile_command(Path("a.cu"), Path("a.o"))
    assert [a for a in cmd if a.startswith("-gencode")] == [
        f"-gencode=arch=compute_{arch},code=sm_{arch}"
    ]
    assert ("-DSS_INT8=0" not in cmd) is int8
    assert "-Xcompiler=-fvisibility=hidden" in cmd and f"-I{tmp_path / 'inc'}" in cmd
    link = config.link_command([Path("a.o")], Path("lib.so"))
    assert "-cudart=static" in link and not any(a.startswith("-lcuda") for a in link)
    assert ("int8" in target.dtypes) is int8
    assert sum("int8" in s for s in target.sources) == (2 if int8 else 0)


def test_old_toolkit_is_refused_per_target(monkeypatch):
    monkeypatch.setattr(cutlass, "find_nvcc", lambda: Path("/cuda/bin/nvcc"))
    monkeypatch.setattr(cutlass, "nvcc_version", lambda nvcc: "12.4")
    monkeypatch.setattr(cutlass, "include_dirs", lambda: [Path("/inc")])
    assert cutlass.BuildConfig.detect(cutlass.ARCHS["90a"]).arch.name == "90a"
    with pytest.raises(UserError, match=r"sm100a kernels need CUDA 12\.8 or newer; nvcc is 12\.4"):
        cutlass.BuildConfig.detect(cutlass.ARCHS["100a"])


@pytest.mark.parametrize(
    ("cc", "dtype", "ok"),
    [
        ((9, 0), "int8", True),
        ((10, 0), "int8", True),
        ((12, 0), "fp8", True),
        ((12, 1), "fp8", True),
        ((12, 0), "int8", False),  # CUTLASS's Sm120 builders take F8F6F4 only
        ((12, 1), None, True),
        ((8, 9), None, False),
        ((10, 3), "fp8", False),  # sm100a code does not run on sm103
        (None, None, False),
    ],
)
def test_each_target_runs_on_its_own_compute_capability(cc, dtype, ok):
    assert (cutlass.unsupported_reason(cc, dtype) is None) is ok
    if cc is not None and ok:
        assert cutlass.arch_for(cc).cc == cc


def test_arch_list_parsing():
    assert [a.name for a in cutlass.parse_archs("sm90a, 121a")] == ["90a", "121a"]
    assert len(cutlass.parse_archs("all")) == len(cutlass.ARCHS)
    with pytest.raises(UserError, match="unknown CUTLASS arch 89; valid: 90a, 100a"):
        cutlass.parse_archs("89")


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
@pytest.mark.parametrize("arch", list(cutlass.ARCHS))
def test_full_build_loads_and_lists_its_configurations(tmp_path, arch):
    why = _toolchain()
    if why:
        pytest.skip(why)
    target = cutlass.ARCHS[arch]
    config = cutlass.BuildConfig.detect(target, build_dir=tmp_path / "build")
    lib_path = cutlass.build(config)
    assert lib_path.is_file() and not list(tmp_path.glob(".cutlass-*"))  # scratch cleaned
    exported = subprocess.run(
        ["nm", "-D", "--defined-only", str(lib_path)], capture_output=True, text=True, check=True
    ).stdout
    api = {ln.split()[-1] for ln in exported.splitlines() if " T " in ln}
    assert {"ss_cutlass_gemm", "ss_cutlass_compress", "ss_cutlass_num_configs"} <= api
    assert not [s for s in api if "cutlass" in s and not s.startswith("ss_cutlass_")]
    # The device code is this target's and no other's (where the toolkit has cuobjdump).
    cuobjdump = shutil.which("cuobjdump") or shutil.which("cuobjdump", path=str(config.nvcc.parent))
    if cuobjdump:
        elves = subprocess.run([cuobjdump, "--list-elf", str(lib_path)], capture_output=True,
                               text=True, check=True)  # fmt: skip
        assert set(re.findall(r"sm_(\d+a?)", elves.stdout)) == {arch}, elves.stdout
    import ctypes

    lib = ctypes.CDLL(str(lib_path))
    cutlass._declare(lib)
    assert lib.ss_cutlass_api_version() == cutlass.API_VERSION
    for (dtype, sparse), fam in cutlass.FAMILIES.items():
        names = [
            lib.ss_cutlass_config_name(fam, i).decode()
            for i in range(lib.ss_cutlass_num_configs(fam))
        ]
        if dtype not in target.dtypes:
            assert names == [], (arch, dtype, sparse)  # no family, not a failing one
            continue
        assert len(names) >= 3 and len(set(names)) == len(names), (dtype, sparse, names)
        # A sparse GEMM runs the weight as CUTLASS's sparse A: always swapped.
        assert all(n.startswith("swap_") for n in names) or not sparse
    assert lib.ss_cutlass_num_configs(99) == 0 and lib.ss_cutlass_config_name(0, 99) is None
