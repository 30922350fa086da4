"""``slidesparse verify``: exactness and 2:4 checks for every pattern on a model's shapes."""

from __future__ import annotations

import click

from slidesparse.commands.options import SparsityList, console


@click.command("verify")
@click.option(
    "--model",
    default="Llama3.2-1B",
    show_default=True,
    help="Built-in model name, or a local HF model folder / config.json.",
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option(
    "--sparsity",
    type=SparsityList(),
    default="all",
    show_default=True,
    help="Comma-separated patterns to check.",
)
@click.option(
    "--M", "m", type=click.IntRange(min=1), default=8, show_default=True, help="Activation rows."
)
@click.option("--seed", type=int, default=0, show_default=True)
def verify_command(model: str, device: str, sparsity, m: int, seed: int) -> int:
    """Slide pruned weights and lifted activations of every layer and check W·Xᵀ is unchanged.

    Exits 1 if any pattern, 2:4 or exactness check fails.
    """
    from rich.table import Table

    from slidesparse.core.models import resolve_model
    from slidesparse.core.verify import verify_model

    spec = resolve_model(model)
    table = Table(title=f"verify {spec.name} on {device} (M={m}, seed={seed})")
    for col in ("layer", "N", "K", "pattern", "K_slide", "pattern", "2:4", "exact", "max err", "s"):
        table.add_column(col, justify="right")
    failures = 0
    for check in verify_model(spec, sparsity, device=device, M=m, seed=seed):
        r = check.report
        failures += not r.ok
        mark = {True: "ok", False: "FAIL"}
        table.add_row(
            check.layer,
            str(r.N),
            str(r.K),
            r.pattern,
            str(r.K_slide),
            mark[r.pattern_ok],
            mark[r.two_four_ok],
            mark[r.exact],
            f"{r.max_abs_err:g}",
            f"{check.seconds:.2f}",
        )
    out = console()
    out.print(table)
    total = len(table.rows)
    out.print(
        f"{total - failures}/{total} checks passed"
        + ("" if not failures else f", {failures} FAILED")
    )
    return 1 if failures else 0


commands = [verify_command]
