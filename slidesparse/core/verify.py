"""Exactness verification over a model's layer shapes: the check behind ``slidesparse verify``."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from slidesparse.core.errors import UserError
from slidesparse.core.models import ModelSpec
from slidesparse.core.sparsity import ExactnessReport, Pattern, check_exact, parse_pattern, prune


@dataclass(frozen=True)
class LayerCheck:
    """One (layer, pattern) verification result."""

    layer: str
    report: ExactnessReport
    seconds: float


def _device(name: str):
    import torch

    if name not in ("cpu", "cuda"):
        raise UserError(f"bad device {name!r}; valid: cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("no CUDA device visible to torch; run with --device cpu")
    return torch.device(name)


def verify_model(
    model: ModelSpec,
    patterns: Iterable[str | Pattern],
    device: str = "cpu",
    M: int = 8,
    seed: int = 0,
) -> Iterator[LayerCheck]:
    """Prune random integer-valued weights of every layer shape, slide, lift and check exactness.

    Integer values in [-8, 8] summed in float64 make the comparison exact, so any mismatch is
    a real indexing error, never rounding.
    """
    import torch

    dev = _device(device)
    pats = [parse_pattern(p) for p in patterns]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for layer, (N, K) in model.layers.items():
        w = torch.randint(-8, 9, (N, K), generator=gen, dtype=torch.int8).float().to(dev)
        x = torch.randint(-8, 9, (M, K), generator=gen, dtype=torch.int8).float().to(dev)
        for p in pats:
            start = time.perf_counter()
            wp = prune(w, p, method="magnitude")
            report = check_exact(wp, x, p)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            yield LayerCheck(layer, report, time.perf_counter() - start)
