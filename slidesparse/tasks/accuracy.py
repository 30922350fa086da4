"""Task ``accuracy``: what pruning a checkpoint to (L-2):L costs in perplexity, and that the
slid engine reproduces the pruned one (:mod:`slidesparse.engine.accuracy`).

One cell is one (model folder, dtype, pattern). ``dense`` measures the unpruned W8A8 engine;
a 2_L cell measures the W8A8 engine pruned to 2_L and compares the slid engine with it. The
perplexity ratio against dense is taken in the report, across cells of the same model,
dtype, text and window.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, PositiveInt

from slidesparse.core.errors import Unsupported
from slidesparse.tasks import TaskContext, register_task
from slidesparse.tasks.axes import Axes, Sparsity, W8A8Dtype, axis, product


def _model_folder(value: Any) -> str:
    if not isinstance(value, str) or not Path(value).is_dir():
        raise ValueError(
            f"model {value!r} must be a checkpoint folder with a tokenizer (accuracy of "
            "random weights means nothing)"
        )
    return str(Path(value).resolve())


ModelFolder = Annotated[str, BeforeValidator(_model_folder)]


class AccuracyAxes(Axes):
    """accuracy: perplexity and slid-vs-pruned exactness per model folder, dtype, pattern."""

    model: axis(ModelFolder)
    dtype: axis(W8A8Dtype)
    sparsity: axis(Sparsity)
    text: str | None = None  # a UTF-8 file; None: the shipped public-domain text
    window: PositiveInt = 256
    new_tokens: PositiveInt = 32

    def points(self) -> Iterator[dict[str, Any]]:
        for p in product(model=self.model, dtype=self.dtype, sparsity=self.sparsity):
            if p["sparsity"] == "2_inf":
                continue  # prunes nothing a checkpoint keeps
            yield {**p, "text": self.text, "window": self.window, "new_tokens": self.new_tokens}


@register_task(
    "accuracy",
    axes=AccuracyAxes,
    default_timeout_s=3600,
    needs_gpu=False,
    mode="accuracy",
    operand=lambda p: (p["dtype"], p.get("sparsity") not in (None, "dense")),
)
def run(params: Mapping[str, Any], ctx: TaskContext) -> list[dict]:
    """One accuracy cell: perplexity of the (pruned) W8A8 engine, exactness of the slid one."""
    from slidesparse import __version__
    from slidesparse.engine import accuracy as acc
    from slidesparse.engine import build_engine
    from slidesparse.engine.bench import free

    folder = Path(params["model"])
    if not folder.is_dir():
        raise Unsupported(f"model folder {folder} is not on this machine")
    dtype, sparsity = params["dtype"], params.get("sparsity", "dense")
    text, label = acc.read_text(params.get("text"))
    ids = acc.tokenize(folder, text)
    window = int(params.get("window", 256))
    chunks = acc.windows(ids, window, ctx.device)
    common = dict(dtype=dtype, device=ctx.device, tag_cache_dir=ctx.cache_dir, max_len=window * 2)
    pruned = None if sparsity == "dense" else sparsity
    ref = build_engine(folder, "w8a8", sparsity=pruned, **common)
    ref_logits = acc.window_logits(ref, chunks)
    ppl, nll, count = acc.perplexity(ref_logits, chunks)
    extra = {
        "perplexity": ppl,
        "nll": nll,
        "windows": int(chunks.shape[0]),
        "window": window,
        "text": label,
        "text_sha256": acc.text_digest(text),
        "model_path": str(folder),
        "engine": {"version": __version__, "reference": "w8a8", "gemm": ref.info.gemm},
    }
    row = {
        "mode": "accuracy",
        # the cell's own model value (the folder's path), so a failed and a measured row of
        # this cell share their identity
        "model": params["model"],
        "backend": "engine",
        "kernel": f"slidesparse-engine {__version__}",
        "dtype": dtype,
        "sparsity": sparsity,
        "M": count,
        "extra": extra,
    }
    if pruned is not None:
        slid = build_engine(folder, "slidesparse", sparsity=sparsity, **common)
        prompt = chunks[:1, : acc.PROMPT_TOKENS]
        cmp = acc.compare(
            ref_logits, acc.window_logits(slid, chunks), ref, slid, prompt, params["new_tokens"]
        )
        extra.update(cmp)
        extra["engine"]["slid_gemm"] = slid.info.gemm
        row["max_abs_err"] = cmp["max_abs_dlogit"]
        row["correct"] = cmp["greedy_agree"] == 1.0
        del slid
    del ref
    free(ctx.device)
    return [row]
