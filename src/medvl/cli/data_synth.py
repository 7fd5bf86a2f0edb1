"""`medvl data` subcommands of this area (filled in by its issue)."""

from __future__ import annotations

import typer


def register_data(data_app: typer.Typer) -> None:
    """Add this module's subcommands to the ``data`` group."""
