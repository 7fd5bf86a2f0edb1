"""``medvl data …``: the data command group.

The group is assembled from several modules so that each area owns its own file:
``cli/data.py`` (check, split, leakage), ``cli/data_synth.py`` (synth, gallery) and
``cli/data_import.py`` (import, shard). Each contributes ``register_data(data_app)``.
"""

from __future__ import annotations

import importlib

import typer

#: Modules that add subcommands to ``medvl data``.
DATA_COMMAND_MODULES: tuple[str, ...] = ("medvl.cli.data_synth", "medvl.cli.data_import")


def register_data(data_app: typer.Typer) -> None:
    """Add this module's ``data`` subcommands (check, split, leakage)."""


def register(app: typer.Typer) -> None:
    """Add the ``data`` group to ``app``."""
    data_app = typer.Typer(help="Datasets: synthesise, import, validate, split and shard.", no_args_is_help=True)
    register_data(data_app)
    for name in DATA_COMMAND_MODULES:
        importlib.import_module(name).register_data(data_app)
    app.add_typer(data_app, name="data")
