"""``slidesparse env``: the GPU tag and machine record."""

from __future__ import annotations

import json

import click

from slidesparse.commands.options import console


@click.command("env")
@click.option("--json", "as_json", is_flag=True, help="Print the machine record as JSON.")
def env_command(as_json: bool) -> None:
    """Show this machine's GPU tag and the record saved next to results."""
    from rich.table import Table

    from slidesparse.core.hardware import detect_machine

    record = detect_machine()
    data = record.to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    table = Table(title=f"GPU tag: {record.gpu_tag}", show_header=False)
    for key, value in data.items():
        if key == "memory_bytes" and value:
            value = f"{value / 2**30:.1f} GiB ({value} bytes)"
        table.add_row(key, "-" if value in (None, {}, []) else str(value))
    table.add_row("dense GEMM dtypes", ", ".join(sorted(record.capabilities.dense)) or "none")
    table.add_row("2:4 sparse dtypes", ", ".join(sorted(record.capabilities.sparse)) or "none")
    console().print(table)


commands = [env_command]
