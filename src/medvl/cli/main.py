"""The ``medvl`` console script.

Each area owns one module in this package exposing ``register(app: typer.Typer) -> None``,
which adds its commands. Command functions import heavy libraries (torch, transformers)
inside their bodies so that ``medvl --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from medvl import __version__

#: Modules that contribute commands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "medvl.cli.data",
    "medvl.cli.train",
    "medvl.cli.evaluate",
    "medvl.cli.align",
    "medvl.cli.experiments",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"medvl {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """Assemble the typer application from every command module."""
    app = typer.Typer(
        name="medvl",
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
    return app


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``medvl`` console script."""
    app = build_app()
    app(args=argv if argv is not None else sys.argv[1:], prog_name="medvl")


if __name__ == "__main__":  # pragma: no cover
    main()
