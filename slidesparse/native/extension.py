"""The csrc extension: where its sources are, how it is built, where the built library lives.

This is the only module that knows ``csrc/``. The library is built with
``torch.utils.cpp_extension`` (ninja) just in time on first use, into a cache directory keyed
by torch version, CUDA version and the sources' hash, unless a prebuilt copy is there already
(``slidesparse build-kernels`` makes one for a ``TORCH_CUDA_ARCH_LIST``; the Docker images
call it). The sources are host-only C++ against cuBLASLt and cuSPARSELt, so a C++ compiler
plus the CUDA headers build them; no device code is compiled.

Libraries: cuBLASLt from the CUDA toolkit torch was built against (``CUDA_HOME``);
cuSPARSELt from its pip wheel. Use the wheel that matches torch's CUDA major version:
``nvidia-cusparselt-cu12`` for ``+cu12x`` builds, ``nvidia-cusparselt-cu13`` for ``+cu13x``
(torch's own ``_cslt_*`` ops load the same wheel, so a mismatch would load two copies). Wheels
up to 0.8 install under ``nvidia/cusparselt/{include,lib}``, later ones under
``nvidia/cu13/{include,lib}``; both are found. ``SLIDESPARSE_CUSPARSELT_DIR`` (a directory
holding ``include/cusparseLt.h`` and ``lib/libcusparseLt.so.0``) overrides the search.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from slidesparse.core.errors import UserError

LIB_NAME = "slidesparse_C"
SOURCES = ("cublaslt_gemm.cpp", "cusparselt_gemm.cpp", "bindings.cpp")
HEADERS = ("common.h",)
ENV_CUSPARSELT = "SLIDESPARSE_CUSPARSELT_DIR"
ENV_CACHE = "SLIDESPARSE_EXT_CACHE"
_CUSPARSELT_LIB = "libcusparseLt.so.0"


def source_dir() -> Path:
    """The folder holding the csrc sources (installed package data, else the source tree)."""
    try:
        from importlib.resources import files

        d = Path(str(files("slidesparse.csrc")))
        if (d / SOURCES[0]).is_file():
            return d
    except (ModuleNotFoundError, TypeError):
        pass
    d = Path(__file__).resolve().parents[2] / "csrc"
    if not (d / SOURCES[0]).is_file():
        raise FileNotFoundError(f"csrc sources not found (looked in the package and {d})")
    return d


def files_hash(folder: Path, names) -> str:
    """A short hash of the named files' names and contents: part of a build folder's name."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode())
        h.update((folder / name).read_bytes())
    return h.hexdigest()[:12]


def sources_hash() -> str:
    """A short hash of every source and header: part of the build directory's name."""
    return files_hash(source_dir(), (*SOURCES, *HEADERS))


def _cusparselt_candidates() -> list[Path]:
    out = []
    try:
        import nvidia  # namespace package of the NVIDIA wheels

        for base in map(Path, nvidia.__path__):
            out += [base / "cusparselt", *sorted(base.glob("cu1*"))]
    except ImportError:
        pass
    return out


def find_cusparselt(override: str | None = None) -> Path:
    """The directory with ``include/cusparseLt.h`` and ``lib/libcusparseLt.so.0``."""
    override = override if override is not None else os.environ.get(ENV_CUSPARSELT)
    candidates = [Path(override)] if override else _cusparselt_candidates()
    for d in candidates:
        if (d / "include" / "cusparseLt.h").is_file() and (d / "lib" / _CUSPARSELT_LIB).is_file():
            return d
    where = override or "the nvidia-cusparselt-cu12/-cu13 wheel's folders"
    raise UserError(
        f"cuSPARSELt headers/library not found in {where}; pip install nvidia-cusparselt-cu13 "
        f"(cu12 for a CUDA 12 torch) or set {ENV_CUSPARSELT}"
    )


@dataclass(frozen=True)
class BuildConfig:
    """Everything a build of the extension depends on."""

    cusparselt_dir: Path
    cuda_home: Path
    arch_list: str | None  # TORCH_CUDA_ARCH_LIST, None: torch's default (the visible GPU)
    build_dir: Path

    @classmethod
    def detect(cls, *, build_dir: Path | None = None, arch_list: str | None = None) -> BuildConfig:
        """The configuration for this machine (environment overrides applied)."""
        import torch
        from torch.utils import cpp_extension

        if torch.version.cuda is None:
            raise UserError("this torch has no CUDA support; the csrc extension needs a CUDA torch")
        cuda_home = cpp_extension.CUDA_HOME
        if not cuda_home or not (Path(cuda_home) / "include" / "cublasLt.h").is_file():
            raise UserError(
                f"CUDA toolkit with cublasLt.h not found (CUDA_HOME={cuda_home}); set CUDA_HOME"
            )
        arch = arch_list or os.environ.get("TORCH_CUDA_ARCH_LIST")
        if build_dir is None:
            build_dir = default_build_dir(arch)
        return cls(find_cusparselt(), Path(cuda_home), arch, Path(build_dir))


def cache_root() -> Path:
    """Where built copies live: $SLIDESPARSE_EXT_CACHE, else ~/.cache/slidesparse/ext."""
    env = os.environ.get(ENV_CACHE)
    return Path(env) if env else Path.home() / ".cache" / "slidesparse" / "ext"


def default_build_dir(arch_list: str | None) -> Path:
    """A build directory unique to torch, CUDA, the target archs and the sources."""
    import torch

    arch = (arch_list or "native").replace(" ", "_").replace(";", "_").replace("+", "p")
    tag = f"torch{torch.__version__.split('+')[0]}_cu{torch.version.cuda}_{arch}_{sources_hash()}"
    return cache_root() / tag


def built_library(build_dir: Path) -> Path:
    return build_dir / f"{LIB_NAME}.so"


def build(config: BuildConfig, *, verbose: bool = False) -> Path:
    """Compile the extension into ``config.build_dir``; the path of the shared library."""
    from torch.utils import cpp_extension

    src = source_dir()
    lib = config.cusparselt_dir / "lib"
    config.build_dir.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if config.arch_list:
        os.environ["TORCH_CUDA_ARCH_LIST"] = config.arch_list
    try:
        cpp_extension.load(
            name=LIB_NAME,
            sources=[str(src / s) for s in SOURCES],
            extra_include_paths=[str(src), str(config.cusparselt_dir / "include")],
            extra_cflags=["-O2"],
            extra_ldflags=[
                f"-L{lib}",
                f"-l:{_CUSPARSELT_LIB}",
                f"-Wl,-rpath,{lib}",
                f"-L{config.cuda_home / 'lib64'}",
                "-lcublasLt",
            ],
            build_directory=str(config.build_dir),
            with_cuda=True,
            is_python_module=False,
            verbose=verbose,
        )
    finally:
        if config.arch_list:
            if old is None:
                os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
            else:
                os.environ["TORCH_CUDA_ARCH_LIST"] = old
    return built_library(config.build_dir)


_loaded: Path | None = None
_error: str | None = None


def load() -> Path:
    """Load the extension library into torch.ops (building it first if no copy exists).

    Call through :func:`slidesparse.native.ops.ensure_loaded`, which defines the op schemas first.
    """
    global _loaded, _error
    if _loaded is not None:
        return _loaded
    if _error is not None:
        raise RuntimeError(_error)
    import torch

    try:
        config = BuildConfig.detect()
        path = built_library(config.build_dir)
        if not path.is_file():
            path = build(config)
        torch.ops.load_library(str(path))
    except Exception as exc:  # a failed build must not kill the worker: record and fall back
        _error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc) else ''}"
        raise RuntimeError(_error) from exc
    _loaded = path
    return path
