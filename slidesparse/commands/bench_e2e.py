"""``slidesparse bench e2e``: the engine's tokens/s per dtype, sparsity, phase and M."""

from __future__ import annotations

import json

import click

from slidesparse.commands.bench import bench
from slidesparse.commands.options import target_spread_option
from slidesparse.core.errors import UserError
from slidesparse.core.timing import DEFAULT_TARGET as TARGET


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _ms(text: str | None, name: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        vals = tuple(int(t) for t in _csv(text))
    except ValueError:
        raise UserError(f"--{name} {text!r}: give comma-separated positive integers") from None
    if not vals or min(vals) <= 0:
        raise UserError(f"--{name} {text!r}: give comma-separated positive integers")
    return vals


@bench.command("e2e")
@click.option("--model", required=True, help="Built-in model name or a local HF folder.")
@click.option("--dtype", "dtypes", default="int8,fp8", show_default=True)
@click.option("--sparsity", default="dense,2_4,2_6,2_8,2_10", show_default=True)
@click.option("--phase", "phases", default="prefill,decode", show_default=True)
@click.option(
    "--M", "Ms", default=None, help="M for every phase (default: prefill 16384, decode 1,64,256)."
)
@click.option("--prefill-M", "prefill_Ms", default=None, help="M for prefill only.")
@click.option("--decode-M", "decode_Ms", default=None, help="M (batch) for decode only.")
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Fewest samples per timing.",
)
@click.option("--warmup", type=click.IntRange(min=1), default=3, show_default=True)
@target_spread_option(
    TARGET, "Relative spread of the median each timing samples until (after --repeats)."
)
@click.option("--decode-steps", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--no-bf16", is_flag=True, help="Skip the bf16 engine reference.")
@click.option("--hf", is_flag=True, help="Also time HF transformers bf16 prefill.")
@click.option(
    "--no-search",
    is_flag=True,
    help="Do not search GEMM algorithms missing from the cache (use the first vetted candidate).",
)
@click.option(
    "--gemm",
    "gemms",
    default="auto",
    show_default=True,
    help="Quantized GEMMs, comma-separated, each a full set of rows: auto (per layer and M "
    "the faster of the other two, timed), cutlass (scales fused in the epilogue), csrc "
    "(cuBLASLt / cuSPARSELt, then a dequant pass).",
)
@click.option("--cache-dir", type=click.Path(), default=None, help="Cache root.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None)
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write every row as JSON lines.",
)
def bench_e2e(
    model,
    dtypes,
    sparsity,
    phases,
    Ms,
    prefill_Ms,
    decode_Ms,
    repeats,
    warmup,
    target_spread,
    decode_steps,
    no_bf16,
    hf,
    no_search,
    gemms,
    cache_dir,
    device,
    json_out,
) -> None:
    """End-to-end prefill / decode tokens/s of the engine: dense W8A8 vs SlideSparse 2_L."""
    from slidesparse.core.sparsity import parse_pattern
    from slidesparse.engine import bench as lib
    from slidesparse.engine.config import resolve_config

    resolve_config(model)  # a bad model fails before anything is built
    for d in _csv(dtypes):
        if d not in ("int8", "fp8"):
            raise UserError(f"--dtype {d!r} is not supported; valid: int8, fp8")
    sps = tuple(parse_pattern(p).name for p in _csv(sparsity))
    for p in _csv(phases):
        if p not in lib.PHASES:
            raise UserError(f"--phase {p!r} is invalid; valid: {', '.join(lib.PHASES)}")
    from slidesparse.engine.algos import GEMM_CHOICES

    for g in _csv(gemms):
        if g not in GEMM_CHOICES:
            raise UserError(f"--gemm {g!r} is invalid; valid: {', '.join(GEMM_CHOICES)}")
    every = _ms(Ms, "M")
    m_map = {
        "prefill": _ms(prefill_Ms, "prefill-M") or every,
        "decode": _ms(decode_Ms, "decode-M") or every,
    }
    plan = lib.E2EPlan(
        model=model,
        dtypes=_csv(dtypes),
        sparsities=sps,
        phases=_csv(phases),
        Ms=m_map,
        repeats=repeats,
        warmup=warmup,
        target_spread=target_spread,
        decode_steps=decode_steps,
        bf16=not no_bf16,
        hf=hf,
        search=not no_search,
        gemms=_csv(gemms),
        cache_dir=cache_dir,
        device=device,
    )
    out = open(json_out, "w") if json_out else None  # noqa: SIM115 - rows stream as they come

    def on_row(row: dict) -> None:
        click.echo(lib.format_row(row))
        if out:
            out.write(json.dumps(row, default=str) + "\n")
            out.flush()

    try:
        lib.run_e2e(plan, on_row=on_row)
    finally:
        if out:
            out.close()


commands: list = []  # attached to the bench group above
