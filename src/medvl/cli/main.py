"""The ``medvl`` console script.

Each area owns one module in this package exposing ``register(app: typer.Typer) -> None``,
which adds its commands. Command functions import heavy libraries (torch, transformers)
inside their bodies so that ``medvl --help`` stays fast.

Errors: any :class:`~medvl.utils.errors.UserInputError` (a configuration or data error the user
can fix) raised by any command is caught once, here: ``error: <message>`` on stderr and exit
code 2, no traceback. Commands therefore raise domain errors instead of catching them. A full
disk (``ENOSPC``/``EDQUOT``) is reported the same way with exit code 1. Warnings raised during a
command are printed as ``warning: <message>`` lines.
"""

from __future__ import annotations

import errno
import importlib
import sys
import warnings
from typing import Any

import typer
from typer.core import TyperGroup

from medvl import __version__
from medvl.utils.errors import EXIT_USER_ERROR, UserInputError

#: Modules that contribute commands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "medvl.cli.data",
    "medvl.cli.train",
    "medvl.cli.evaluate",
    "medvl.cli.models",
    "medvl.cli.benchmark",
    "medvl.cli.align",
    "medvl.cli.experiments",
    "medvl.cli.slides",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"medvl {__version__}")
        raise typer.Exit()


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Warnings during a command (a repaired log, a stale lock taken over) as one ``warning:`` line."""
    typer.echo(f"warning: {message}", err=True)


class MedvlGroup(TyperGroup):
    """The root command group: turns a :class:`UserInputError` from any command into exit code 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except UserInputError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            typer.echo(f"error: no space left on the device ({exc}); nothing written so far is lost: free "
                       "space and run the command again (medvl train: with --resume)", err=True)
            raise typer.Exit(1) from None


def build_app() -> typer.Typer:
    """Assemble the typer application from every command module."""
    app = typer.Typer(
        name="medvl",
        cls=MedvlGroup,
        help="Train, evaluate and diagnose vision-language models for medical imaging.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                     help="Print the version and exit."),
    ) -> None:
        """medvl command line."""

    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(app)
    from medvl.cli.help import use_readable_help

    return use_readable_help(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``medvl`` console script."""
    app = build_app()
    app(args=argv if argv is not None else sys.argv[1:], prog_name="medvl")


if __name__ == "__main__":  # pragma: no cover
    main()
