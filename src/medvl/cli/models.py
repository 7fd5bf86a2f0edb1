"""``medvl models inspect SPEC``: what the model front door sees in a checkpoint (see docs/models.md);
``medvl models export RUN``: a trained run's model as a standalone directory (LoRA merged on request)."""

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


def export_command(
    run_dir: str = typer.Argument(..., help="A training run directory (medvl train --out)."),
    out: str = typer.Option(..., "--out", "-o", help="Model directory to write (must not exist or be empty)."),
    which: str = typer.Option("best", "--which", help="Checkpoint: best or last."),
    merge_lora: bool = typer.Option(False, "--merge-lora", help="Fold LoRA adapters into the weights (no peft needed)."),
    adapters: bool = typer.Option(False, "--adapters", help="Also write each tower's LoRA adapter in peft's format."),
) -> None:
    """Write a run's trained model as a standalone model directory (medvl evaluate --model reads it)."""
    from pathlib import Path

    from medvl.models.export import export_model
    from medvl.utils.rundir import prepare_run_dir

    if which not in ("best", "last"):
        raise typer.BadParameter("--which must be best or last")
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        typer.echo(f"error: {target} exists and is not empty", err=True)
        raise typer.Exit(2)
    written = export_model(run_dir, prepare_run_dir(target), which=which, merge_lora=merge_lora,  # type: ignore[arg-type]
                           adapters=adapters)
    typer.echo(f"model: {written}" + (" (LoRA merged)" if merge_lora else ""))
    if adapters:
        typer.echo(f"adapters: {written / 'adapters'}")


def register(app: typer.Typer) -> None:
    """Add the ``models`` group (``inspect``, ``export``)."""
    models_app = typer.Typer(help="Inspect model checkpoints: family, towers, preprocessing, tokenizer.",
                             no_args_is_help=True)
    models_app.command("inspect")(inspect_command)
    models_app.command("export")(export_command)
    app.add_typer(models_app, name="models")
