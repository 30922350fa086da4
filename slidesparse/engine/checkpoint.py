"""Checkpoints in the compressed-tensors W8A8 layout, as RedHatAI ships them
(``*-quantized.w8a8`` INT8, ``*-FP8-dynamic`` FP8) and as ``slidesparse convert`` writes them.

The layout (``config.json`` -> ``quantization_config``): ``quant_method``
``compressed-tensors``, one config group targeting ``Linear`` whose weights are 8-bit,
symmetric, per output channel (``strategy: channel``) and whose input activations are
8-bit, symmetric, dynamic per token; ``format`` ``int-quantized`` (INT8) or
``float-quantized`` (FP8 E4M3). Each quantized linear ``<module>`` stores ``<module>.weight``
[N, K] int8 / float8_e4m3fn and ``<module>.weight_scale`` [N, 1]; modules in ``ignore``
(``lm_head``) and every other tensor stay in bf16. Anything else - static activation scales
(``input_scale``), group or tensor strategies, asymmetric zero points, 2:4 sparsity metadata -
is refused with one line naming it, never approximated.

A converted checkpoint adds a ``slidesparse`` section to config.json (pattern, source and
its hash, K_slide per linear) and may hold the slid weights in ``slid.slidesparse``, a
safetensors file other tools do not look for, so the engine starts without sliding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from slidesparse.core.errors import UserError

SLID_FILE = "slid.slidesparse"
_FORMATS = {"int-quantized": "int", "float-quantized": "float"}
QDTYPE_OF = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}


@dataclass
class Quantized:
    """A quantized linear weight as a checkpoint holds it: q [N, K], per-channel scale [N]
    fp32, and optionally its slid form [N, K_slide] for ``pattern``."""

    q: torch.Tensor
    scale: torch.Tensor
    slid: torch.Tensor | None = None
    pattern: str | None = None

    def dequantize(self) -> torch.Tensor:
        """bf16 [N, K] = q · scale (what the bf16 backend runs)."""
        return (self.q.float() * self.scale[:, None]).to(torch.bfloat16)


@dataclass(frozen=True)
class W8A8Scheme:
    """What a compressed-tensors W8A8 checkpoint holds."""

    dtype: str  # "int8" | "fp8"
    ignore: tuple[str, ...]


def _field(d: dict, key: str, want, where: str, what: str) -> None:
    got = d.get(key)
    if got != want:
        raise UserError(f"{where}: {what} {key}={got!r} is not supported (W8A8 needs {want!r})")


def read_scheme(hf_cfg: dict, where: str) -> W8A8Scheme | None:
    """The W8A8 scheme of a parsed config.json, None for an unquantized checkpoint; a
    UserError naming the scheme for anything the engine cannot run exactly."""
    qc = hf_cfg.get("quantization_config")
    if not qc:
        return None
    method = qc.get("quant_method")
    if method != "compressed-tensors":
        raise UserError(
            f"{where}: quantization method {method!r} is not supported; the engine reads "
            "bf16/fp16 checkpoints and compressed-tensors W8A8 (channel weights, dynamic "
            "per-token activations)"
        )
    if qc.get("sparsity_config"):
        fmt = (qc["sparsity_config"] or {}).get("format", "?")
        raise UserError(
            f"{where}: compressed-tensors sparsity metadata (format {fmt!r}) is not "
            "supported; convert a dense W8A8 or bf16 checkpoint instead"
        )
    groups = qc.get("config_groups") or {}
    if len(groups) != 1:
        raise UserError(f"{where}: {len(groups)} quantization config groups; W8A8 has one")
    group = next(iter(groups.values()))
    w, a = group.get("weights") or {}, group.get("input_activations")
    if w.get("strategy") != "channel":
        raise UserError(
            f"{where}: weight strategy {w.get('strategy')!r} (group / tensor / block "
            "quantization) is not supported; W8A8 needs per-channel weight scales"
        )
    _field(w, "num_bits", 8, where, "weights")
    _field(w, "symmetric", True, where, "weights")
    if w.get("dynamic"):
        raise UserError(f"{where}: dynamic weight quantization is not supported")
    if not a:
        raise UserError(
            f"{where}: weight-only quantization (no input_activations) is not supported; "
            "W8A8 quantizes activations per token"
        )
    if not a.get("dynamic"):
        raise UserError(
            f"{where}: static activation scales are not supported; the engine quantizes "
            "activations dynamically per token"
        )
    _field(a, "strategy", "token", where, "input_activations")
    _field(a, "num_bits", 8, where, "input_activations")
    _field(a, "symmetric", True, where, "input_activations")
    kind = w.get("type")
    if kind not in ("int", "float") or a.get("type") != kind:
        raise UserError(f"{where}: weight type {kind!r} with activation type {a.get('type')!r}")
    fmt = group.get("format") or qc.get("format")
    if fmt not in _FORMATS or _FORMATS[fmt] != kind:
        raise UserError(f"{where}: compressed-tensors format {fmt!r} is not supported")
    if group.get("targets") != ["Linear"]:
        raise UserError(
            f"{where}: quantization targets {group.get('targets')!r}; W8A8 targets Linear"
        )
    return W8A8Scheme("int8" if kind == "int" else "fp8", tuple(qc.get("ignore") or ()))


def quantization_config(dtype: str) -> dict[str, Any]:
    """The ``quantization_config`` of a W8A8 checkpoint of ``dtype`` ("int8" | "fp8")."""
    kind = "int" if dtype == "int8" else "float"

    def args(strategy: str, dynamic: bool) -> dict:
        return {
            "num_bits": 8,
            "type": kind,
            "symmetric": True,
            "strategy": strategy,
            "dynamic": dynamic,
            "group_size": None,
            "block_structure": None,
            "actorder": None,
            "observer": "memoryless" if dynamic else "minmax",
            "observer_kwargs": {},
        }

    return {
        "quant_method": "compressed-tensors",
        "format": f"{kind}-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": args("channel", False),
                "input_activations": args("token", True),
                "output_activations": None,
                "format": f"{kind}-quantized",
            }
        },
        "ignore": ["lm_head"],
        "kv_cache_scheme": None,
        "sparsity_config": {},
    }


def slid_tensors(folder: Path, device) -> dict[str, torch.Tensor]:
    """The slid weights a converted checkpoint stores (empty where it stores none)."""
    from safetensors.torch import load_file

    path = Path(folder) / SLID_FILE
    if not path.is_file():
        return {}
    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # a damaged cache of derived data: say so, do not guess
        raise UserError(
            f"{path}: unreadable ({type(exc).__name__}); delete it to slide on load"
        ) from None
