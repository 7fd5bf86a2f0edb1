"""``medvl models inspect SPEC``: what the model front door sees in a checkpoint (see docs/models.md)."""

from __future__ import annotations

import json

import typer

__all__ = ["register"]


def inspect_command(
    spec: str = typer.Argument(..., help="A model directory, hf-hub: id, EmbeddingSet directory or .npz file."),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Allow a Hugging Face directory's own Python code (auto_map) to run."),
    as_json: bool = typer.Option(False, "--json", help="Print the description as JSON."),
) -> None:
    """Print format, family, towers, embedding dim, preprocessing, tokenizer, max text length and padding."""
    from medvl.config.loading import ConfigError
    from medvl.models.loading import inspect_model
    from medvl.utils.compat import MissingExtraError

    try:
        info = inspect_model(spec, trust_remote_code=trust_remote_code)
    except (ConfigError, MissingExtraError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(info.to_dict(), indent=2, default=str))
    else:
        typer.echo("\n".join(info.lines()))


def register(app: typer.Typer) -> None:
    """Add the ``models`` group (``inspect``)."""
    models_app = typer.Typer(help="Inspect model checkpoints: family, towers, preprocessing, tokenizer.",
                             no_args_is_help=True)
    models_app.command("inspect")(inspect_command)
    app.add_typer(models_app, name="models")
