"""``medvl train CONFIG``: train a model from a run config (see docs/training.md)."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    config: Path = typer.Argument(..., help="Run config YAML (data, model, objective, training sections)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set training.epochs=5 (repeatable)."),
    out: Path | None = typer.Option(None, "--out", help="Run directory (default: runs/<name>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing run directory first."),
) -> None:
    """Train a model; checkpoints, logs and the resolved config go to the run directory."""
    from medvl.config.loading import load_config
    from medvl.config.training import RunConfig

    if resume and overwrite:
        raise typer.BadParameter("--resume and --overwrite exclude each other")
    cfg = load_config(config, RunConfig, overrides=set_)
    run_dir = out if out is not None else Path("runs") / cfg.name

    from medvl.evaluation.validation import build_validation_hooks
    from medvl.training.callbacks import EpochSummary
    from medvl.training.run import run_training
    from medvl.training.trainer import NonFiniteLossError

    summary_line = EpochSummary(None, log=typer.echo, monitor=cfg.training.monitor)  # as sweep cells print
    try:
        result = run_training(cfg, run_dir, resume=resume, overwrite=overwrite, callbacks=[summary_line],
                              hook_factory=build_validation_hooks)
    except NonFiniteLossError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3) from None
    best = result.best or {}
    summary = f"{result.status}: {result.epochs_completed} epochs, {result.global_step} optimizer steps"
    if best:
        summary += f"; best {best.get('metric')}={best.get('value'):.4g} at epoch {best.get('epoch')}"
    typer.echo(f"{summary}\nrun directory: {run_dir}")


def register(app: typer.Typer) -> None:
    """Add ``medvl train``."""
    app.command("train")(train)
