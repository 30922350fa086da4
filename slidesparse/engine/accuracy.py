"""What pruning costs in quality, and a check that sliding costs nothing.

For a model folder with a tokenizer and a pattern 2_L, one evaluation:

* **perplexity** of the dense W8A8 engine pruned to 2_L (``dense``: not pruned) on a text,
  in non-overlapping windows of ``window`` tokens (every window's next-token NLL, summed
  over the windows, exponentiated over the token count);
* **exactness** of the slid engine (``slidesparse``: cuSPARSELt on the slid weight, or the
  CPU reference) against that pruned W8A8 engine on the same windows: max |Δlogit| and, from
  a prompt of the text's first tokens, how many of ``new_tokens`` greedy tokens agree. The
  slide is exact, so INT8 logits are equal bit for bit; FP8 may differ in the last bits
  (fp32 summation order), which is why the greedy agreement is the verdict.

The default text (``data/public_domain.txt``) is the Gettysburg Address, the opening of the
Declaration of Independence and the Preamble of the US Constitution: public domain, small
enough for CI, natural enough that pruning damage shows.
"""

from __future__ import annotations

import hashlib
import math
from importlib import resources
from pathlib import Path

import torch

from slidesparse.core.errors import UserError

DEFAULT_TEXT = "public_domain.txt"
PROMPT_TOKENS = 16


def read_text(path: str | Path | None) -> tuple[str, str]:
    """(text, label) of ``path``, or of the shipped public-domain text when None."""
    if path is None:
        text = (
            resources.files("slidesparse.engine")
            .joinpath("data", DEFAULT_TEXT)
            .read_text(encoding="utf-8")
        )
        return text, f"slidesparse:{DEFAULT_TEXT}"
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8"), str(p)
    except FileNotFoundError:
        raise UserError(f"--text {path}: no such file") from None
    except UnicodeDecodeError:
        raise UserError(f"--text {path}: not UTF-8 text") from None


def tokenize(folder: Path, text: str) -> list[int]:
    """Token ids of ``text`` with the model folder's ``tokenizer.json`` (tokenizers)."""
    from tokenizers import Tokenizer

    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise UserError(
            f"{folder}: no tokenizer.json; accuracy needs the model's tokenizer "
            "(a built-in name has random weights and none: pass a checkpoint folder)"
        )
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise UserError(f"{path}: not a tokenizers file ({exc})") from None
    return tok.encode(text).ids


def windows(ids: list[int], window: int, device) -> torch.Tensor:
    """Non-overlapping windows [n, window] of ``ids`` (the short tail is dropped)."""
    n = len(ids) // window
    if n == 0:
        raise UserError(
            f"the text has {len(ids)} tokens, fewer than one window of {window}: "
            "give a longer --text or a smaller --window"
        )
    return torch.tensor(ids[: n * window], device=device).view(n, window)


@torch.inference_mode()
def window_logits(engine, chunks: torch.Tensor) -> list[torch.Tensor]:
    """Float logits [window, vocab] of each window (one forward per window)."""
    return [engine.model.all_logits(c[None])[0].float() for c in chunks]


def perplexity(logits: list[torch.Tensor], chunks: torch.Tensor) -> tuple[float, float, int]:
    """(perplexity, mean NLL, predicted tokens) of next-token prediction in every window."""
    nll, count = 0.0, 0
    for lg, c in zip(logits, chunks, strict=True):
        nll += torch.nn.functional.cross_entropy(lg[:-1], c[1:], reduction="sum").item()
        count += c.numel() - 1
    mean = nll / count
    return math.exp(mean), mean, count


def compare(
    ref: list[torch.Tensor], other: list[torch.Tensor], ref_engine, other_engine, prompt, n: int
) -> dict:
    """max |Δlogit| between two engines' window logits, and their greedy agreement."""
    diff = max((a - b).abs().max().item() for a, b in zip(ref, other, strict=True))
    span = max((a.max() - a.min()).item() for a in ref)
    a = ref_engine.generate(prompt, n)[0].tolist()
    b = other_engine.generate(prompt, n)[0].tolist()
    same = [x == y for x, y in zip(a, b, strict=True)]
    first = same.index(False) if False in same else None
    return {
        "max_abs_dlogit": diff,
        "logit_range": span,
        "greedy_agree": sum(same) / len(same),
        "greedy_first_divergence": first,
        "greedy_tokens": n,
    }


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
