"""The ``medvl`` console script.

Each area owns one module in this package exposing ``register(app: typer.Typer) -> None``,
which adds its commands. Command functions import heavy libraries (torch, transformers)
inside their bodies so that ``medvl --help`` stays fast.

Errors: any :class:`~medvl.utils.errors.UserInputError` (a configuration or data error the user
can fix) raised by any command is caught once, here: ``error: <message>`` on stderr and exit
code 2, no traceback. Commands therefore raise domain errors instead of catching them.
"""

from __future__ import annotations

import importlib
import sys
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
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"medvl {__version__}")
        raise typer.Exit()


class MedvlGroup(TyperGroup):
    """The root command group: turns a :class:`UserInputError` from any command into exit code 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UserInputError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None


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
