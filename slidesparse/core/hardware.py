"""Machine identity: which GPU this is, its tag, what it can run, and the record saved with results.

The GPU tag is ``{GPU}_{cc}_{py}_{cu}_{arch}``, e.g. ``H100_cc90_py312_cu129_x86_64``. A machine
with no CUDA device gets the documented CPU tag ``CPU_cc0_{py}_cpu_{arch}``. Nothing here touches
CUDA at import; :func:`detect_machine` does (so the runner calls it in a worker or through
:func:`detect_machine_isolated`).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from slidesparse.core.dtypes import parse_dtype


def short_name(device_name: str) -> str:
    """The GPU part of the tag: "NVIDIA GeForce RTX 5080" -> RTX5080, "NVIDIA H100 PCIe" -> H100."""
    name = device_name.strip()
    name = re.sub(r"^NVIDIA\s+", "", name)
    m = re.match(r"GeForce\s+(RTX|GTX)\s+(\w+)", name)
    if m:
        return f"{m.group(1)}{m.group(2)}"
    return re.split(r"[\s-]", name, maxsplit=1)[0]


def cuda_tag(cuda_version: str | None) -> str:
    """``cu`` plus the CUDA runtime digits ("12.9" -> cu129); ``cpu`` when there is no CUDA."""
    if not cuda_version:
        return "cpu"
    major, minor = [*cuda_version.split("."), "0"][:2]
    return f"cu{int(major)}{int(minor)}"


def make_tag(gpu: str, cc: tuple[int, int] | None, py: str, cuda: str | None, arch: str) -> str:
    """Assemble a GPU tag from its parts (``py`` like "3.12", ``cuda`` like "12.9")."""
    cc_part = f"cc{cc[0]}{cc[1]}" if cc else "cc0"
    py_part = "py" + "".join(py.split(".")[:2])
    return f"{gpu}_{cc_part}_{py_part}_{cuda_tag(cuda)}_{arch}"


_TAG_RE = re.compile(
    r"^(?P<gpu>[A-Za-z0-9]+)_cc(?P<cc>\d+)(?:_(?P<dtype>[A-Za-z0-9]+))?_py(?P<py>\d+)_"
    r"(?P<cu>cu\d+|cpu)_(?P<arch>x86_64|aarch64|arm64)$"
)


def parse_tag(tag: str) -> dict[str, Any]:
    """Split a tag into gpu, cc, py, cuda, arch (and dtype for old end-to-end folder names)."""
    from slidesparse.core.errors import UserError

    m = _TAG_RE.match(tag)
    if not m:
        raise UserError(
            f"bad GPU tag {tag!r}; expected {{GPU}}_cc{{NN}}_py{{NNN}}_cu{{NNN}}_{{arch}}, "
            "e.g. H100_cc90_py312_cu129_x86_64"
        )
    d = m.groupdict()
    cc = d["cc"]
    return {
        "gpu": d["gpu"],
        "cc": (int(cc[:-1]), int(cc[-1])) if cc != "0" else None,
        "py": f"{d['py'][0]}.{d['py'][1:]}",
        "cuda": None if d["cu"] == "cpu" else f"{d['cu'][2:-1]}.{d['cu'][-1]}",
        "arch": d["arch"],
        "dtype": d["dtype"],
        "tag": _canonical(d),
    }


def _canonical(d: dict[str, str]) -> str:
    return f"{d['gpu']}_cc{d['cc']}_py{d['py']}_{d['cu']}_{d['arch']}"


@dataclass(frozen=True)
class Capabilities:
    """Which GEMMs exist on a compute capability (dense via cuBLASLt, 2:4 via cuSPARSELt)."""

    cc: tuple[int, int] | None
    dense: frozenset[str]
    sparse: frozenset[str]

    def supports(self, dtype: str, sparse: bool) -> bool:
        """True if a dense (``sparse=False``) or 2:4 GEMM of ``dtype`` runs here."""
        return parse_dtype(dtype) in (self.sparse if sparse else self.dense)

    def reason(self, dtype: str, sparse: bool) -> str:
        """Why a dtype does not run here (for skipped cells)."""
        kind = "2:4 sparse" if sparse else "dense"
        where = f"cc {self.cc[0]}.{self.cc[1]}" if self.cc else "this machine (no CUDA device)"
        need = _MIN_CC[parse_dtype(dtype)][1 if sparse else 0]
        return f"no {kind} {dtype} GEMM on {where} (needs cc >= {need[0]}.{need[1]})"


# Minimum compute capability (dense, 2:4 sparse) per dtype. Sparse Tensor Cores start at sm80;
# FP8 Tensor Cores at sm89 (Ada) and sm90 (Hopper); FP4 E2M1 block-scaled at sm100 (Blackwell).
_MIN_CC: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "fp16": ((7, 0), (8, 0)),
    "bf16": ((8, 0), (8, 0)),
    "int8": ((7, 5), (8, 0)),
    "fp8": ((8, 9), (8, 9)),
    "fp4": ((10, 0), (10, 0)),
}


def capabilities(cc: tuple[int, int] | None) -> Capabilities:
    """The capability table entry for compute capability ``cc`` (None: no GPU, nothing runs)."""
    if cc is None:
        return Capabilities(None, frozenset(), frozenset())
    cc = (int(cc[0]), int(cc[1]))
    dense = frozenset(d for d, (dn, _) in _MIN_CC.items() if cc >= dn)
    sparse = frozenset(d for d, (_, sp) in _MIN_CC.items() if cc >= sp)
    return Capabilities(cc, dense, sparse)


def _parse_cc(value) -> tuple[int, int]:
    """A record's compute capability, [major, minor]; UserError naming the fix otherwise."""
    from slidesparse.core.errors import UserError

    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise UserError(
        f"machine record: cc must be [major, minor] like [9, 0] (or null without a GPU), "
        f"got {value!r}"
    )


@dataclass
class MachineRecord:
    """What is saved next to results: enough to say where and with what each number was measured."""

    gpu_name: str | None
    cc: tuple[int, int] | None
    sm_count: int | None
    memory_bytes: int | None
    driver: str | None
    cuda_runtime: str | None
    torch: str | None
    triton: str | None
    cusparselt: str | None
    cublaslt: str | None
    ptxas: str | None  # the ptxas Triton runs for this cc (after TRITON_PTXAS_* overrides)
    ptxas_version: str | None
    ptxas_env: dict[str, str] = field(default_factory=dict)
    python: str = field(default_factory=lambda: platform.python_version())
    arch: str = field(default_factory=lambda: machine_arch())
    hostname: str = field(default_factory=platform.node)
    gpu_count: int = 0
    # A tag given with a saved record (an imported or merged store) wins over the derived one.
    tag: str | None = None

    @property
    def gpu_short(self) -> str:
        """The GPU part of the tag (``CPU`` when there is no device)."""
        return short_name(self.gpu_name) if self.gpu_name else "CPU"

    @property
    def gpu_tag(self) -> str:
        """The tag results are keyed by."""
        if self.tag:
            return self.tag
        return make_tag(self.gpu_short, self.cc, self.python, self.cuda_runtime, self.arch)

    @property
    def has_gpu(self) -> bool:
        """Whether a CUDA device was detected."""
        return self.cc is not None

    @property
    def capabilities(self) -> Capabilities:
        """What this machine's GPU can run."""
        return capabilities(self.cc)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with the derived tag and short name included."""
        d = asdict(self)
        d.pop("tag")
        d["cc"] = list(self.cc) if self.cc else None
        d["gpu_tag"] = self.gpu_tag
        d["gpu_short"] = self.gpu_short
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MachineRecord:
        """Inverse of :meth:`to_dict`: unknown keys ignored, a saved ``gpu_tag`` kept."""
        names = set(cls.__dataclass_fields__) - {"tag"}
        kwargs = {k: v for k, v in d.items() if k in names and v is not None}
        if kwargs.get("cc") is not None:
            kwargs["cc"] = _parse_cc(kwargs["cc"])
        for f in dataclasses.fields(cls):  # fields a partial record leaves out are unknown
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                kwargs.setdefault(f.name, None)
        return cls(**kwargs, tag=d.get("gpu_tag") or None)

    def versions(self) -> dict[str, Any]:
        """Software versions, as recorded in every result row (unknown ones left out)."""
        from slidesparse import __version__

        keys = ("torch", "triton", "cuda_runtime", "cusparselt", "cublaslt", "driver", "python")
        out = {k: getattr(self, k) for k in (*keys, "ptxas") if getattr(self, k) is not None}
        return {"slidesparse": __version__, **out}


def machine_arch() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def _triton_info(cc: tuple[int, int] | None):
    """Triton's version and the ptxas it would run for ``cc`` (after TRITON_PTXAS_* overrides)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("TRITON_PTXAS")}
    try:
        import triton
    except Exception:  # triton is optional on CPU machines
        return None, None, None, env
    tool = None
    try:
        # get_ptxas(arch) is what a compile calls: from sm100 on it may pick the Blackwell ptxas
        # (TRITON_PTXAS_BLACKWELL_PATH) instead of TRITON_PTXAS_PATH.
        from triton.backends.nvidia.compiler import get_ptxas

        tool = get_ptxas(cc[0] * 10 + cc[1] if cc else 90)
    except Exception:  # older Triton: fall back to the knob, then PATH
        try:
            tool = triton.knobs.nvidia.ptxas
        except Exception:
            tool = None
    if tool is not None:
        return triton.__version__, tool.path, tool.version, env
    return triton.__version__, env.get("TRITON_PTXAS_PATH") or shutil.which("ptxas"), None, env


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
        return out.splitlines()[0] if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def _cublaslt_version() -> str | None:
    for name in ("libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.cublasLtGetVersion.restype = ctypes.c_size_t
        v = int(lib.cublasLtGetVersion())
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}"
    return None


def detect_machine() -> MachineRecord:
    """Probe this process's view of the machine (initializes CUDA if a device exists)."""
    import torch

    rec = MachineRecord(
        gpu_name=None,
        cc=None,
        sm_count=None,
        memory_bytes=None,
        driver=None,
        cuda_runtime=None,
        torch=torch.__version__,
        triton=None,
        cusparselt=None,
        cublaslt=None,
        ptxas=None,
        ptxas_version=None,
    )
    if not torch.cuda.is_available():
        rec.triton, rec.ptxas, rec.ptxas_version, rec.ptxas_env = _triton_info(None)
        return rec
    props = torch.cuda.get_device_properties(0)
    rec.gpu_name = props.name
    rec.cc = (props.major, props.minor)
    rec.sm_count = props.multi_processor_count
    rec.memory_bytes = int(props.total_memory)
    rec.gpu_count = torch.cuda.device_count()
    rec.cuda_runtime = torch.version.cuda
    rec.driver = _driver_version()
    try:
        v = torch.backends.cusparselt.version()
        rec.cusparselt = f"{v // 1000}.{v // 100 % 10}.{v % 100}" if v else None
    except Exception:  # torch built without cuSPARSELt
        rec.cusparselt = None
    rec.cublaslt = _cublaslt_version()
    rec.triton, rec.ptxas, rec.ptxas_version, rec.ptxas_env = _triton_info(rec.cc)
    return rec


def detect_machine_isolated(cuda_visible_devices: str | None = None) -> MachineRecord:
    """:func:`detect_machine` in a child process, so the caller never creates a CUDA context."""
    env = dict(os.environ)
    if cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    out = subprocess.run(
        [sys.executable, "-m", "slidesparse.core.hardware"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    ).stdout
    return MachineRecord.from_dict(json.loads(out.strip().splitlines()[-1]))


def gpu_tag() -> str:
    """The tag of this machine (detected in a child process)."""
    return detect_machine_isolated().gpu_tag


@functools.cache
def device_tag(index: int = 0) -> str:
    """The tag of CUDA device ``index``, in this process (which then holds a CUDA context).

    For code already running on the GPU (kernels, benchmarks); planners use :func:`gpu_tag`.
    """
    import torch

    props = torch.cuda.get_device_properties(index)
    cc = (props.major, props.minor)
    py = platform.python_version()
    return make_tag(short_name(props.name), cc, py, torch.version.cuda, machine_arch())


if __name__ == "__main__":  # used by detect_machine_isolated
    print(json.dumps(detect_machine().to_dict(), default=str))
