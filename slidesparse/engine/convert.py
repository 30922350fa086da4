"""``slidesparse convert``: a checkpoint pruned to (L-2):L and written as compressed-tensors W8A8.

The source is a local folder (bf16/fp16, or compressed-tensors W8A8) or a Hugging Face model
id fetched into huggingface_hub's cache. Every decoder linear is pruned by magnitude in
aligned groups of L along K; a bf16 source is then quantized per output channel (the
engine's :func:`~slidesparse.engine.linear.quantize_weight`), a W8A8 source keeps its values
and scales (pruning zeroes quantized values). Everything else - embeddings, norms, biases,
lm_head, tokenizer files - is copied unchanged, so other tools load the result as an
ordinary dense W8A8 model. ``config.json`` gains a ``slidesparse`` section: the pattern, the
source and the sha256 of its weights, and K_slide per linear. With ``store_slid`` the slid
weights go to ``slid.slidesparse`` too.

The result is written into a temporary folder beside the destination and renamed into place
at the end: an interrupted conversion leaves no half-written checkpoint, and an existing
destination (or the source itself) is never written to.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from slidesparse.core.errors import UserError

# HF names of the decoder linears the engine quantizes (everything else is copied).
LINEAR_WEIGHT = re.compile(
    r"^model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$"
)
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_FETCH = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert` wrote."""

    dst: Path
    source: str
    pattern: str
    dtype: str
    linears: int
    tensors: int
    seconds: float
    source_sha256: str


def resolve_source(src: str) -> Path:
    """A local model folder, or a Hugging Face model id fetched into the hub cache."""
    p = Path(src)
    if p.exists():
        if not p.is_dir():
            raise UserError(f"{src}: not a model folder (config.json + *.safetensors)")
        return p
    if not _HUB_ID.match(src):
        raise UserError(f"{src}: no such folder, and not a Hugging Face model id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(src, allow_patterns=_FETCH))
    except Exception as exc:  # offline, unknown id, gated, network down: one line
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        why = "HF_HUB_OFFLINE is set" if offline else type(exc).__name__
        raise UserError(
            f"{src}: cannot fetch it from the Hugging Face Hub ({why}); this machine looks "
            "offline or the id is wrong: download it where there is a network and pass "
            "the local folder"
        ) from None


def source_sha256(folder: Path, files: list[Path]) -> str:
    """sha256 over config.json and the weight files, in name order (what was converted)."""
    h = hashlib.sha256()
    for path in [folder / "config.json", *sorted(files)]:
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 23), b""):
                h.update(chunk)
    return h.hexdigest()


def _check_dst(folder: Path, dst: Path) -> None:
    src, out = folder.resolve(), dst.resolve()
    if out == src or src in out.parents:
        raise UserError(f"-o {dst} is the source folder or inside it; choose another folder")
    if dst.exists():
        raise UserError(f"-o {dst} exists; convert never overwrites: remove it or choose another")


def convert(
    src: str,
    dst: str | Path,
    sparsity: str,
    dtype: str | None = None,
    *,
    store_slid: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> ConvertResult:
    """Prune ``src`` to ``sparsity`` (``dense``: quantize only) and write it to ``dst``."""
    from slidesparse.core import sparsity as sp
    from slidesparse.engine.checkpoint import QDTYPE_OF, SLID_FILE, quantization_config
    from slidesparse.engine.config import config_from_hf, read_hf_config
    from slidesparse.engine.weights import HFWeights

    t0 = time.perf_counter()
    pattern = sp.parse_pattern(sparsity)
    if pattern.is_inf:
        raise UserError("--sparsity 2_inf prunes nothing a checkpoint can keep; use 2_L or dense")
    if store_slid and pattern.is_dense:
        raise UserError("--store-slid needs a 2_L pattern: a dense checkpoint is not slid")
    folder = resolve_source(src)
    dst = Path(dst)
    _check_dst(folder, dst)
    hf_cfg = read_hf_config(folder)
    cfg = config_from_hf(hf_cfg, folder.name, str(folder))  # refuses other architectures
    weights = HFWeights(folder, cfg, "cpu")
    have = weights.scheme.dtype if weights.scheme else None
    if have and dtype and dtype != have:
        raise UserError(
            f"{src} is {have.upper()} W8A8; converting it to {dtype.upper()} would quantize "
            f"twice: pass --dtype {have} or start from the bf16 checkpoint"
        )
    dtype = have or dtype or "int8"
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    files = sorted(set(weights.files.values()))
    digest = source_sha256(folder, files)

    tmp = dst.parent / f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        names = sorted(weights.files)
        done = _convert_tensors(
            weights, names, pattern, QDTYPE_OF[dtype], device, tmp, store_slid, progress
        )
        linears, k_slide, weight_map, slid = done
        if len(files) > 1 or (folder / "model.safetensors.index.json").is_file():
            index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        if slid:
            from safetensors.torch import save_file

            save_file(slid, str(tmp / SLID_FILE), metadata={"pattern": pattern.name})
        skip = {"config.json", "model.safetensors.index.json", SLID_FILE}
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix != ".safetensors" and path.name not in skip:
                shutil.copy2(path, tmp / path.name)
        out_cfg = dict(hf_cfg)
        out_cfg["quantization_config"] = quantization_config(dtype)
        out_cfg["slidesparse"] = {
            "pattern": pattern.name,
            "source": src,
            "source_sha256": digest,
            "dtype": dtype,
            "k_slide": k_slide,
            "slid_weights": SLID_FILE if slid else None,
        }
        (tmp / "config.json").write_text(json.dumps(out_cfg, indent=2) + "\n")
        os.rename(tmp, dst)  # the one step that makes the checkpoint appear, whole
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ConvertResult(
        dst, src, pattern.name, dtype, linears, len(weight_map), time.perf_counter() - t0, digest
    )


def _convert_tensors(weights, names, pattern, qdtype, device, tmp, store_slid, progress):
    """Write every source file's tensors into ``tmp`` under its own file name."""
    from safetensors.torch import save_file

    from slidesparse.core import sparsity as sp
    from slidesparse.engine.linear import quantize_weight

    by_file: dict[Path, list[str]] = {}
    for name in names:
        by_file.setdefault(weights.files[name], []).append(name)
    k_slide: dict[str, int] = {}
    weight_map: dict[str, str] = {}
    slid: dict[str, torch.Tensor] = {}
    linears = 0
    with _bar(len(names), progress) as advance:
        for path, file_names in sorted(by_file.items()):
            out: dict[str, torch.Tensor] = {}
            for name in file_names:
                advance(name)
                if weights.scheme and name.endswith((".weight_scale", ".input_scale")):
                    continue  # written with their weight (input_scale refused there)
                if not LINEAR_WEIGHT.match(name):
                    out[name] = weights.tensor(name, None)
                    continue
                module = name.removesuffix(".weight")
                if weights.scheme:  # read once, with its scale and the scheme's checks
                    w = weights.linear([(module, None)])
                    q, scale = w.q.to(device), w.scale.to(device)
                else:
                    w = weights.tensor(name, None).to(device, torch.bfloat16)
                    q, scale = None, None
                if not pattern.is_dense:
                    if q is None:
                        w = sp.prune(w, pattern, method="magnitude")
                    else:
                        q = sp.prune(q, pattern, method="magnitude")
                if q is None:
                    q, scale = quantize_weight(w, qdtype)  # [N, K], [N]
                out[name] = q.cpu().contiguous()
                out[f"{module}.weight_scale"] = scale.float().reshape(-1, 1).cpu()
                kind = module.split(".", 3)[3]  # "self_attn.q_proj"
                if not pattern.is_dense:
                    k_slide[kind] = sp.k_slide(q.shape[1], pattern)
                    if store_slid:
                        slid[f"{module}.weight_slid"] = sp.slide_weight(q, pattern).cpu()
                linears += 1
            save_file(out, str(tmp / path.name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(out, path.name))
    return linears, k_slide, weight_map, slid


class _bar:
    """A rich progress bar over the tensors on stderr (silent when ``enabled`` is False)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self._p = total, enabled, None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import Progress

            self._p = Progress(console=Console(stderr=True), transient=True)
            self._p.start()
            self._task = self._p.add_task("converting", total=self.total)

        def advance(name: str) -> None:
            if self._p is not None:
                self._p.update(self._task, advance=1, description=name)

        return advance

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.stop()
        return False
