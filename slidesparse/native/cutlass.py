"""The CUTLASS library: W8A8 GEMMs with the scales fused into the epilogue (csrc/cutlass).

``libslidesparse_cutlass.so`` holds dense and 2:4 sparse FP8 / INT8 GEMMs that write
``Y[M, N] = bf16(X·Wᵀ · scale_x[M] · scale_w[N] + bias[N])``, each in several tile / cluster /
schedule configurations, and CUTLASS's 2:4 compressor. It is built by nvcc from the sources in
``csrc/cutlass`` against the CUTLASS headers of the ``nvidia-cutlass`` wheel, like the csrc
extension: on first use into a cache directory keyed by the target arch and the sources'
hash, or ahead of time by ``slidesparse build-kernels`` (the Docker images do). Loading a
built copy needs neither nvcc nor the headers.

One library per target (:data:`ARCHS`), because CUTLASS's kernels use arch-specific features
(the ``a`` targets) that run on exactly one compute capability: sm90a (H100 / H200 / GH200),
sm100a (B200 / GB200), sm120a (RTX 50, RTX PRO 6000) and sm121a (GB10, DGX Spark, from the
sm120 sources). CUTLASS 4.2's Sm120 builders take FP8 operands only, so those two libraries
have no INT8 families. The loader picks the library of the GPU it runs on.

The library exports a plain C API (``csrc/cutlass/api.cu``) loaded with ctypes, so it does not
depend on torch's C++ ABI: a build made on a machine without a GPU (CI, a Docker build) runs
on any torch of the same CUDA major version. Calls go on torch's current stream, so they are
captured by CUDA graphs like any kernel.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from slidesparse.core.errors import UserError

LIB_NAME = "libslidesparse_cutlass.so"
SUBDIR = "cutlass"
COMMON = ("api.cu", "scaled_gemm.cuh")
ENV_CUTLASS = "SLIDESPARSE_CUTLASS_DIR"
API_VERSION = 2
# Family ids of csrc/cutlass/scaled_gemm.cuh.
FAMILIES = {("fp8", False): 0, ("int8", False): 1, ("fp8", True): 2, ("int8", True): 3}
# Status codes of the C API.
STATUS = {
    1: "CUTLASS cannot implement this problem (alignment or shape)",
    2: "workspace too small",
    3: "kernel launch failed",
    4: "no such configuration",
    5: "library built without this GPU's device code",
}
# Tile-scheduler orders the search tries with every configuration: (max swizzle, raster).
# Raster 1 walks GEMM-M first, 2 GEMM-N first (0 would be CUTLASS's own heuristic).
SCHEDULES = ((1, 1), (1, 2), (4, 1), (4, 2), (8, 1), (8, 2))


@dataclass(frozen=True)
class Arch:
    """One build target: nvcc's arch ``name``, the sources' ``prefix``, the one compute
    capability its arch-specific code runs on, whether CUTLASS builds INT8 GEMMs for it, and
    the oldest CUDA toolkit that compiles it."""

    name: str
    prefix: str
    cc: tuple[int, int]
    int8: bool
    min_cuda: tuple[int, int]

    @property
    def dtypes(self) -> tuple[str, ...]:
        return ("fp8", "int8") if self.int8 else ("fp8",)

    @property
    def sources(self) -> tuple[str, ...]:
        """Translation units: the C API, then one per family (compiled in parallel)."""
        fams = (f"{self.prefix}_{k}_{d}.cu" for k in ("dense", "sparse") for d in self.dtypes)
        return ("api.cu", *fams)

    @property
    def headers(self) -> tuple[str, ...]:
        return ("scaled_gemm.cuh", f"{self.prefix}_dense.inc", f"{self.prefix}_sparse.inc")

    def defines(self) -> list[str]:
        return [] if self.int8 else ["-DSS_INT8=0"]


ARCHS = {
    a.name: a
    for a in (
        Arch("90a", "sm90", (9, 0), True, (12, 0)),
        Arch("100a", "sm100", (10, 0), True, (12, 8)),
        Arch("120a", "sm120", (12, 0), False, (12, 8)),
        Arch("121a", "sm120", (12, 1), False, (12, 9)),
    )
}
# Every file under csrc/cutlass, each arch's and the shared ones.
SOURCES = tuple(dict.fromkeys(s for a in ARCHS.values() for s in a.sources))
HEADERS = tuple(dict.fromkeys(h for a in ARCHS.values() for h in a.headers))
MIN_CC = min(a.cc for a in ARCHS.values())
MAX_CC = max(a.cc for a in ARCHS.values())


def arch_for(cc: tuple[int, int] | None) -> Arch | None:
    """The target whose code runs on compute capability ``cc`` (None: none does)."""
    return next((a for a in ARCHS.values() if cc is not None and a.cc == tuple(cc)), None)


def parse_archs(text: str | None) -> list[Arch]:
    """``90a,100a`` -> those targets; ``all`` every one; UserError naming the valid ones."""
    if text is None or text.strip() == "all":
        return list(ARCHS.values())
    names = [t.strip().removeprefix("sm").removeprefix("_") for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in ARCHS]
    if bad or not names:
        raise UserError(f"unknown CUTLASS arch {', '.join(bad) or repr(text)}; "
                        f"valid: {', '.join(ARCHS)} or all")  # fmt: skip
    return [ARCHS[n] for n in dict.fromkeys(names)]


def source_dir() -> Path:
    """The folder holding csrc/cutlass (installed package data, else the source tree)."""
    from slidesparse.native import extension

    return extension.source_dir() / SUBDIR


def sources_hash(arch: Arch) -> str:
    """A short hash of one target's sources and headers: part of its build directory's name."""
    from slidesparse.native import extension

    return extension.files_hash(source_dir(), (*arch.sources, *arch.headers))


def include_dirs(override: str | None = None) -> list[Path]:
    """CUTLASS's include folders: ``$SLIDESPARSE_CUTLASS_DIR`` (a CUTLASS checkout), else the
    ``nvidia-cutlass`` wheel's copy (found without importing it: its package imports
    cuda-python)."""
    override = override if override is not None else os.environ.get(ENV_CUTLASS)
    if override:
        root = Path(override)
    else:
        spec = importlib.util.find_spec("cutlass_library")
        if spec is None or not spec.submodule_search_locations:
            raise UserError(
                "CUTLASS headers not found; pip install 'slidesparse[gpu]' (nvidia-cutlass) "
                f"or set {ENV_CUTLASS} to a CUTLASS checkout"
            )
        root = Path(next(iter(spec.submodule_search_locations))) / "source"
    dirs = [root / "include", root / "tools" / "util" / "include"]
    if not (dirs[0] / "cutlass" / "cutlass.h").is_file():
        raise UserError(f"{dirs[0]} holds no cutlass/cutlass.h; set {ENV_CUTLASS} to CUTLASS")
    return dirs


def find_nvcc() -> Path:
    """nvcc from ``$CUDA_HOME``/bin or the PATH."""
    for base in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if base and (Path(base) / "bin" / "nvcc").is_file():
            return Path(base) / "bin" / "nvcc"
    found = shutil.which("nvcc")
    if not found:
        raise UserError("nvcc not found; install the CUDA toolkit (12.0 or newer) or set CUDA_HOME")
    return Path(found)


def nvcc_version(nvcc: Path) -> str:
    """``13.0`` from ``nvcc --version``."""
    out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, check=True)
    m = re.search(r"release (\d+\.\d+)", out.stdout)
    if not m:
        raise UserError(f"cannot read the CUDA version from {nvcc} --version")
    return m.group(1)


def default_build_dir(arch: Arch) -> Path:
    """Where the library of one target lives: unique to the arch and its sources (the CUDA
    runtime is linked in statically, so no torch or toolkit version is part of it)."""
    from slidesparse.native import extension

    return extension.cache_root() / f"cutlass_sm{arch.name}_{sources_hash(arch)}"


@dataclass(frozen=True)
class BuildConfig:
    """Everything a build of the CUTLASS library depends on."""

    nvcc: Path
    cuda_version: str
    include_dirs: tuple[Path, ...]
    arch: Arch
    build_dir: Path

    @classmethod
    def detect(cls, arch: Arch, *, build_dir: Path | None = None) -> BuildConfig:
        """The configuration for building ``arch`` on this machine (environment overrides
        applied); UserError where the toolkit is too old for it."""
        nvcc = find_nvcc()
        version = nvcc_version(nvcc)
        if tuple(int(p) for p in version.split(".")[:2]) < arch.min_cuda:
            need = ".".join(map(str, arch.min_cuda))
            raise UserError(f"CUTLASS sm{arch.name} kernels need CUDA {need} or newer; "
                            f"nvcc is {version}")  # fmt: skip
        dirs = tuple(include_dirs())
        return cls(nvcc, version, dirs, arch, Path(build_dir or default_build_dir(arch)))

    def compile_command(self, source: Path, obj: Path) -> list[str]:
        """The nvcc command line of one translation unit."""
        a = self.arch.name
        incs = [f"-I{d}" for d in (source_dir(), *self.include_dirs)]
        return [
            str(self.nvcc), "-std=c++17", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr",
            "-Xcompiler=-fPIC", "-Xcompiler=-fvisibility=hidden",
            f"-gencode=arch=compute_{a},code=sm_{a}", *self.arch.defines(), *incs,
            "-c", str(source), "-o", str(obj),
        ]  # fmt: skip

    def link_command(self, objs: list[Path], lib: Path) -> list[str]:
        """The nvcc link line: cudart linked statically, no libcuda (CUTLASS reaches the
        driver's TMA descriptor call through the runtime's entry-point query)."""
        return [str(self.nvcc), "-shared", "-cudart=static", *map(str, objs), "-o", str(lib)]


def built_library(build_dir: Path) -> Path:
    return build_dir / LIB_NAME


def build(config: BuildConfig, *, jobs: int | None = None, verbose: bool = False) -> Path:
    """Compile and link the library into ``config.build_dir``; its path.

    Translation units compile in parallel in a scratch folder; the library appears in the
    build folder only once linked (rename), so a killed build leaves nothing half-made and
    concurrent builders (one per GPU worker) at worst both finish.
    """
    config.build_dir.parent.mkdir(parents=True, exist_ok=True)
    src = source_dir()
    sources = config.arch.sources
    jobs = jobs or max(1, min(len(sources), os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(dir=config.build_dir.parent, prefix=".cutlass-") as tmp:
        tmp_dir = Path(tmp)
        objs = [tmp_dir / (Path(s).stem + ".o") for s in sources]
        cmds = [config.compile_command(src / s, o) for s, o in zip(sources, objs, strict=True)]
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            for cmd, res in zip(cmds, pool.map(_run, cmds), strict=True):
                if res.returncode != 0:
                    raise RuntimeError(_failure(cmd, res))
                if verbose and res.stderr.strip():
                    print(res.stderr)
        lib = tmp_dir / LIB_NAME
        link = config.link_command(objs, lib)
        res = _run(link)
        if res.returncode != 0:
            raise RuntimeError(_failure(link, res))
        config.build_dir.mkdir(parents=True, exist_ok=True)
        os.replace(lib, built_library(config.build_dir))
    return built_library(config.build_dir)


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def _failure(cmd: list[str], res: subprocess.CompletedProcess) -> str:
    errors = [ln for ln in (res.stderr or res.stdout).splitlines() if "error" in ln]
    first = errors[0].strip() if errors else (res.stderr or res.stdout).strip()[-400:]
    return f"{Path(cmd[0]).name} failed on {Path(cmd[-3]).name}: {first}"


# --- loading -------------------------------------------------------------------------------

_lib: ctypes.CDLL | None = None
_error: str | None = None
_lock = threading.Lock()


def _declare(lib: ctypes.CDLL) -> None:
    c = ctypes
    lib.ss_cutlass_api_version.restype = c.c_int
    lib.ss_cutlass_num_configs.argtypes = [c.c_int]
    lib.ss_cutlass_num_configs.restype = c.c_int
    lib.ss_cutlass_config_name.argtypes = [c.c_int, c.c_int]
    lib.ss_cutlass_config_name.restype = c.c_char_p
    lib.ss_cutlass_workspace.argtypes = [c.c_int] * 5
    lib.ss_cutlass_workspace.restype = c.c_longlong
    lib.ss_cutlass_gemm.argtypes = [
        c.c_int, c.c_int, *[c.c_void_p] * 7, *[c.c_int] * 5, c.c_void_p, c.c_size_t, c.c_void_p,
    ]  # fmt: skip
    lib.ss_cutlass_gemm.restype = c.c_int
    size_p = c.POINTER(c.c_size_t)
    lib.ss_cutlass_compressed_sizes.argtypes = [c.c_int, c.c_int, c.c_int, size_p, size_p, size_p]
    lib.ss_cutlass_compressed_sizes.restype = c.c_int
    lib.ss_cutlass_compress.argtypes = [
        c.c_int, c.c_void_p, c.c_void_p, c.c_void_p, c.c_int, c.c_int, c.c_void_p, c.c_size_t,
        c.c_void_p,
    ]  # fmt: skip
    lib.ss_cutlass_compress.restype = c.c_int


def device_cc() -> tuple[int, int] | None:
    """This process's GPU compute capability (None: no CUDA device)."""
    import torch

    return tuple(torch.cuda.get_device_capability()) if torch.cuda.is_available() else None


def target() -> Arch | None:
    """The target of the GPU this process runs on (None: no GPU, or one no target serves)."""
    return arch_for(device_cc())


def load() -> ctypes.CDLL:
    """The loaded library of this GPU's target, built first when no copy exists.
    RuntimeError with the reason when it cannot be built or loaded (remembered: a worker does
    not retry a failed build)."""
    global _lib, _error
    with _lock:
        if _lib is not None:
            return _lib
        if _error is not None:
            raise RuntimeError(_error)
        try:
            cc = device_cc()
            reason = unsupported_reason(cc)
            if reason:
                raise RuntimeError(reason)
            arch = arch_for(cc)
            path = built_library(default_build_dir(arch))
            if not path.is_file():
                path = build(BuildConfig.detect(arch))
            lib = ctypes.CDLL(str(path))
            _declare(lib)
            if lib.ss_cutlass_api_version() != API_VERSION:
                raise RuntimeError(f"{path} has API {lib.ss_cutlass_api_version()}, "
                                   f"expected {API_VERSION}; rebuild it")  # fmt: skip
        except Exception as exc:  # a failed build must not kill the worker: record it
            text = str(exc).strip().splitlines()
            _error = f"{type(exc).__name__}: {text[-1] if text else ''}"
            raise RuntimeError(_error) from exc
        _lib = lib
        return lib


def is_built() -> bool:
    """Whether a built library for this GPU is there to load (no build needed)."""
    arch = target()
    return _lib is not None or (
        arch is not None and built_library(default_build_dir(arch)).is_file()
    )


def load_error() -> str | None:
    """Why the library cannot be used here (None when it loads)."""
    try:
        load()
    except RuntimeError as exc:
        return str(exc)
    return None


def unsupported_reason(cc: tuple[int, int] | None, dtype: str | None = None) -> str | None:
    """Why the CUTLASS kernels cannot run on compute capability ``cc`` (for operand
    ``dtype``, when given), or None."""
    if cc is None:
        return "no CUDA device"
    arch = arch_for(cc)
    if arch is None:
        have = ", ".join(f"sm{a.name} (cc {a.cc[0]}.{a.cc[1]})" for a in ARCHS.values())
        return f"the CUTLASS kernels are built for {have}; this GPU is cc {cc[0]}.{cc[1]}"
    if dtype is not None and dtype not in arch.dtypes:
        return f"CUTLASS's sm{arch.name} builders make no {dtype} GEMMs (FP8 only)"
    return None


# --- calls ---------------------------------------------------------------------------------


def family(dtype: str, sparse: bool) -> int:
    """The family id of (operand dtype, sparse)."""
    try:
        return FAMILIES[(dtype, sparse)]
    except KeyError:
        raise ValueError(
            f"no CUTLASS family for {dtype} {'sparse' if sparse else 'dense'}"
        ) from None


def config_names(fam: int) -> list[str]:
    """The names of every configuration compiled for family ``fam``, by index."""
    lib = load()
    return [
        lib.ss_cutlass_config_name(fam, i).decode() for i in range(lib.ss_cutlass_num_configs(fam))
    ]


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"CUTLASS {what}: {STATUS.get(status, f'status {status}')}")


_workspaces: dict = {}


@functools.cache
def _workspace_bytes(fam: int, cfg: int, M: int, N: int, K: int) -> int:
    """Workspace bytes of one configuration at one shape: asked once, not on every eager call
    (the engine's prefill launches each shape once per layer)."""
    need = load().ss_cutlass_workspace(fam, cfg, M, N, K)
    if need < 0:
        _check(4, "workspace query")
    return need


def _workspace(device, nbytes: int):
    """A cached workspace of at least ``nbytes`` on ``device`` (None for zero): allocated
    outside any CUDA-graph capture, on the first eager call of a shape."""
    import torch

    if nbytes <= 0:
        return None
    buf = _workspaces.get(device)
    if buf is None or buf.numel() < nbytes:
        buf = _workspaces[device] = torch.empty(nbytes, dtype=torch.uint8, device=device)
    return buf


def _ptr(t) -> int | None:
    return None if t is None else t.data_ptr()


def scaled_mm(
    fam: int, cfg: int, x, w, meta, scale_x, scale_w, bias, N: int, swizzle=1, raster=0, out=None
):
    """``Y[M, N] = bf16(x·Wᵀ · scale_x[M] · scale_w[N] + bias[N])`` with configuration ``cfg``
    and tile order (``swizzle``, ``raster``: see :data:`SCHEDULES`).

    x [M, K] (fp8 / int8, contiguous); w: [N, K] for a dense family, the compressed weight
    of :func:`compress` for a sparse one (``meta`` its metadata); scale_x [M], scale_w [N]
    fp32 contiguous; bias [N] bf16 or None. Runs on torch's current stream.
    """
    import torch

    lib = load()
    M, K = x.shape
    if out is None:
        out = torch.empty((M, N), dtype=torch.bfloat16, device=x.device)
    ws = _workspace(x.device, _workspace_bytes(fam, cfg, M, N, K))
    stream = torch.cuda.current_stream(x.device).cuda_stream
    status = lib.ss_cutlass_gemm(
        fam, cfg, x.data_ptr(), w.data_ptr(), _ptr(meta), out.data_ptr(), scale_x.data_ptr(),
        scale_w.data_ptr(), _ptr(bias), M, N, K, swizzle, raster, _ptr(ws),
        0 if ws is None else ws.numel(), stream,
    )  # fmt: skip
    _check(status, f"GEMM M={M} N={N} K={K} config {cfg}")
    return out


def compress(fam: int, w):
    """A slid 2:4 weight [N, K_slide] -> (compressed values, metadata) uint8 buffers."""
    import torch

    lib = load()
    N, K = w.shape
    a, e, ws = ctypes.c_size_t(), ctypes.c_size_t(), ctypes.c_size_t()
    _check(lib.ss_cutlass_compressed_sizes(fam, N, K, a, e, ws), "compressed sizes")
    comp = torch.zeros(a.value, dtype=torch.uint8, device=w.device)
    meta = torch.zeros(e.value, dtype=torch.uint8, device=w.device)
    work = torch.empty(max(1, ws.value), dtype=torch.uint8, device=w.device)
    stream = torch.cuda.current_stream(w.device).cuda_stream
    status = lib.ss_cutlass_compress(
        fam, w.contiguous().data_ptr(), comp.data_ptr(), meta.data_ptr(), N, K, work.data_ptr(),
        work.numel(), stream,
    )  # fmt: skip
    _check(status, f"compress N={N} K={K}")
    return comp, meta
