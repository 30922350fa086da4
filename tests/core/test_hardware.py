"""GPU identity: short names, tags, capabilities, machine record, no CUDA at import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from slidesparse.core.errors import UserError
from slidesparse.core.hardware import (
    MachineRecord,
    capabilities,
    cuda_tag,
    detect_machine,
    make_tag,
    parse_tag,
    short_name,
)


@pytest.mark.parametrize(
    ("name", "short"),
    [
        ("NVIDIA H100 PCIe", "H100"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA GeForce RTX 5080", "RTX5080"),
        ("NVIDIA GeForce RTX 4090", "RTX4090"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA B200", "B200"),
        ("NVIDIA GB10", "GB10"),
    ],
)
def test_short_names(name, short):
    assert short_name(name) == short


def test_tags():
    assert make_tag("H100", (9, 0), "3.12.3", "12.9", "x86_64") == "H100_cc90_py312_cu129_x86_64"
    assert make_tag("GB10", (12, 1), "3.12", "12.9", "aarch64") == "GB10_cc121_py312_cu129_aarch64"
    assert cuda_tag("13.0") == "cu130" and cuda_tag(None) == "cpu"
    old = parse_tag("H100_cc90_FP8E4M3_py312_cu129_x86_64")
    assert old["tag"] == "H100_cc90_py312_cu129_x86_64" and old["dtype"] == "FP8E4M3"
    assert parse_tag("B200_cc100_py312_cu129_x86_64")["cc"] == (10, 0)
    with pytest.raises(UserError, match="bad GPU tag"):
        parse_tag("H100")


def test_capabilities_per_cc():
    assert capabilities((8, 0)).supports("int8", sparse=True)
    assert not capabilities((8, 0)).supports("fp8", sparse=False)
    assert capabilities((8, 9)).supports("fp8", sparse=True)
    assert capabilities((9, 0)).dense == {"fp16", "bf16", "int8", "fp8"}
    assert capabilities((10, 0)).supports("fp4", sparse=True)
    assert not capabilities((7, 5)).supports("int8", sparse=True)
    assert capabilities(None).dense == frozenset()
    assert "needs cc >= 8.9" in capabilities((8, 6)).reason("fp8", sparse=False)


def test_cpu_machine_record_round_trip():
    rec = detect_machine()
    if rec.gpu_name is None:
        assert rec.gpu_tag.startswith("CPU_cc0_py")
        assert "_cpu_" in rec.gpu_tag
    d = rec.to_dict()
    assert d["gpu_tag"] == rec.gpu_tag and d["torch"]
    again = MachineRecord.from_dict(d)
    assert again.gpu_tag == rec.gpu_tag and again.versions() == rec.versions()


def test_gpu_record_tag():
    rec = MachineRecord.from_dict(
        {
            "gpu_name": "NVIDIA H100 80GB HBM3",
            "cc": [9, 0],
            "sm_count": 132,
            "memory_bytes": 80 * 2**30,
            "driver": "580",
            "cuda_runtime": "12.9",
            "torch": "2.9",
            "triton": "3.5",
            "cusparselt": "0.8.0",
            "cublaslt": "12.9.1",
            "ptxas": None,
            "ptxas_version": None,
            "python": "3.12.3",
            "arch": "x86_64",
        }
    )
    assert rec.gpu_tag == "H100_cc90_py312_cu129_x86_64"
    assert rec.capabilities.supports("fp8", sparse=True)


def test_import_never_initializes_cuda():
    """Import every slidesparse module with CUDA entry points booby-trapped."""
    code = """
import torch, pkgutil, importlib
def boom(*a, **k):
    raise RuntimeError("CUDA touched at import")
for name in ("_lazy_init", "init", "is_available", "device_count", "get_device_properties",
             "get_device_name", "current_device", "set_device", "synchronize"):
    setattr(torch.cuda, name, boom)
import slidesparse
for mod in pkgutil.walk_packages(slidesparse.__path__, "slidesparse."):
    if mod.name.endswith("__main__"):
        continue
    importlib.import_module(mod.name)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
