"""The ``slidesparse`` command line.

Commands are thin: they parse, call one library function and print. Each lives in a module
of :mod:`slidesparse.commands` named after it that exports ``commands`` (a list of click
commands; subcommands attach to their group); this module only assembles them and turns user
errors into one line and exit code 2.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import click

from slidesparse import __version__
from slidesparse.core.errors import StoreWarning, UserError

# Modules under slidesparse/commands that contribute commands, in --help order.
_COMMAND_MODULES = (
    "env",
    "patterns",
    "verify",
    "run_matrix",
    "submit",
    "plan",
    "results",
    "bench",
    "tune",
    "bench_quant",
    "tune_kernels",
    "bench_gemm",
    "bench_e2e",
    "generate",
    "convert",
    "accuracy",
    "build_kernels",
    "report",
    "merge",
    "import_legacy",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slidesparse")
def cli() -> None:
    """SlideSparse: measure (L-2):L sparse GEMMs and models against dense cuBLASLt."""


def _short_help(command: click.Command) -> None:
    # click cuts a summary to 45 characters ("..."): give it the whole first sentence instead.
    if command.help and not command.short_help:
        command.short_help = command.help.strip().split("\n\n")[0].replace("\n", " ")
    for sub in getattr(command, "commands", {}).values():
        _short_help(sub)


for _name in _COMMAND_MODULES:
    for _command in importlib.import_module(f"slidesparse.commands.{_name}").commands:
        cli.add_command(_command)
_short_help(cli)  # after every module ran: subcommands attach to their groups on import


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, StoreWarning):  # handled data problems: one line, no source
        click.echo(f"warning: {message}", err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, print user errors as one line, return the exit code."""
    warnings.showwarning = _show_warning
    try:
        rv = cli.main(args=argv, prog_name="slidesparse", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        return UserError.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        # click's own usage errors (unknown option, bad --K value): one line, exit 2.
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
