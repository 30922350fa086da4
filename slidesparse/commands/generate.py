"""``slidesparse generate``: greedy generation with the engine, to see a backend work."""

from __future__ import annotations

import time

import click

from slidesparse.core.errors import UserError


def _token_ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise UserError(
            f"--tokens {text!r}: give token ids separated by spaces or commas"
        ) from None
    if not ids or min(ids) < 0:
        raise UserError(f"--tokens {text!r}: give at least one non-negative token id")
    return ids


@click.command("generate")
@click.option("--model", required=True, help="Built-in model name or a local HF folder.")
@click.option(
    "--backend",
    type=click.Choice(["bf16", "w8a8", "slidesparse"]),
    default="bf16",
    show_default=True,
)
@click.option(
    "--dtype",
    type=click.Choice(["int8", "fp8"]),
    default=None,
    help="Quantized dtype [default: a W8A8 checkpoint's own, else int8].",
)
@click.option("--sparsity", default=None, help="2_L for slidesparse; a prune pattern otherwise.")
@click.option("--prompt", default=None, help="Text (needs a tokenizer in the model folder).")
@click.option("--tokens", default=None, help="Prompt token ids, e.g. '1 2 3'.")
@click.option("--max-new", type=click.IntRange(min=1), default=32, show_default=True)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Copies of the prompt decoded together.",
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None)
@click.option("--require-pruned", is_flag=True, help="Refuse weights not pruned to --sparsity.")
@click.option(
    "--gemm",
    type=click.Choice(["auto", "cutlass", "csrc"]),
    default="auto",
    show_default=True,
    help="Quantized GEMMs: cutlass (scales fused in the epilogue), csrc (cuBLASLt / "
    "cuSPARSELt plus a dequant pass) or auto (per layer and M the faster of the two, timed).",
)
@click.option("--cache-dir", type=click.Path(), default=None, help="Cache root.")
def generate(
    model,
    backend,
    dtype,
    sparsity,
    prompt,
    tokens,
    max_new,
    batch,
    device,
    require_pruned,
    gemm,
    cache_dir,
) -> None:
    """Greedy-decode MAX_NEW tokens from a prompt on one engine backend."""
    import torch

    from slidesparse.engine import build_engine
    from slidesparse.engine.config import resolve_config

    if bool(prompt) == bool(tokens):
        raise UserError("give exactly one of --prompt TEXT or --tokens IDS")
    _, folder = resolve_config(model)
    tok = None
    if prompt is not None:
        tok = _tokenizer(folder)
        ids = tok(prompt)["input_ids"]
    else:
        ids = _token_ids(tokens)
    t0 = time.perf_counter()
    eng = build_engine(
        model,
        backend,
        dtype=dtype,
        sparsity=sparsity,
        device=device,
        require_pruned=require_pruned,
        cache_dir=cache_dir,
        gemm=gemm,
    )
    if max(ids) >= eng.cfg.vocab_size:
        raise UserError(f"token id {max(ids)} is outside the vocabulary ({eng.cfg.vocab_size})")
    built = time.perf_counter() - t0
    x = torch.tensor([ids] * batch, dtype=torch.long)
    t0 = time.perf_counter()
    out = eng.generate(x, max_new).cpu()
    took = time.perf_counter() - t0
    i = eng.info
    click.echo(
        f"model={i.model} backend={i.backend} dtype={i.dtype or 'bf16'} "
        f"sparsity={i.sparsity or i.prune} gemm={i.gemm or 'torch'} device={i.device} "
        f"built in {built:.1f} s"
    )
    new = out[0].tolist()
    click.echo("tokens: " + " ".join(map(str, new)))
    if tok is not None:
        click.echo("text: " + tok.decode(new))
    click.echo(
        f"{batch * max_new} tokens in {took:.2f} s ({batch * max_new / took:.1f} tok/s, "
        "first call includes warm-up and graph capture)"
    )


def _tokenizer(folder):
    if folder is None or not any(folder.glob("tokenizer*")):
        raise UserError("--prompt needs a model folder with a tokenizer; use --tokens IDS")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UserError("--prompt needs transformers installed; use --tokens IDS") from None
    return AutoTokenizer.from_pretrained(str(folder))


commands = [generate]
