"""``medvl evaluate``: retrieval, classification, zero-shot and linear probes on one split (see docs/evaluation.md)."""

from __future__ import annotations

from pathlib import Path

import typer


def evaluate(
    data: Path = typer.Option(..., "--data", help="Manifest (.parquet/.csv/.jsonl) of the data to evaluate on."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="medvl run directory or model directory."),
    hf_model: Path | None = typer.Option(None, "--hf-model", help="Local Hugging Face CLIP-family model directory."),
    tasks: str | None = typer.Option(None, "--tasks", help="Comma list of retrieval,classification,zeroshot,probe."),
    config: Path | None = typer.Option(None, "--config", help="Evaluation config YAML (EvaluationConfig)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set probe.seeds=[0,1] (repeatable)."),
    split: str | None = typer.Option(None, "--split", help="Split to evaluate (default: test)."),
    out: Path | None = typer.Option(None, "--out", help="Output directory (default: <checkpoint>/eval-<split>)."),
    which: str = typer.Option("best", "--which", help="Checkpoint of a run directory: best or last."),
    root: Path | None = typer.Option(None, "--root", help="Directory image paths are relative to."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
) -> None:
    """Evaluate a model; writes results.json, metrics.csv and results.md and prints the table."""
    from medvl.config.evaluation import EvaluationConfig
    from medvl.config.loading import load_config
    from medvl.utils.rundir import prepare_run_dir

    if (checkpoint is None) == (hf_model is None):
        raise typer.BadParameter("give exactly one of --checkpoint or --hf-model")
    if which not in ("best", "last"):
        raise typer.BadParameter("--which must be best or last")
    overrides = list(set_)
    if tasks is not None:
        names = [t.strip() for t in tasks.split(",") if t.strip()]
        overrides.append(f"tasks=[{','.join(names)}]")
    if split is not None:
        overrides.append(f"split={split}")
    cfg = load_config(config, EvaluationConfig, overrides=overrides)
    from medvl.utils.devices import resolve_device

    resolve_device(cfg.device)  # an unusable device is an error before the output directory exists
    if out is None:
        if checkpoint is None:
            raise typer.BadParameter("--out is required with --hf-model")
        out = checkpoint / f"eval-{cfg.split}"
    prepare_run_dir(out, overwrite=overwrite)

    from medvl.evaluation.results import markdown_table, metric_rows
    from medvl.evaluation.suite import run_evaluation

    try:
        result = run_evaluation(cfg, manifest=data, out_dir=out, checkpoint=checkpoint, hf_model=hf_model,
                                which=which, root=root)
    except (FileNotFoundError, ValueError) as exc:  # domain errors (UserInputError) reach cli.main's handler
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(markdown_table(metric_rows(result["tasks"], result["provenance"])))
    for task, res in result["tasks"].items():
        reason = (res.get("info") or {}).get("skipped")
        if reason:
            typer.echo(f"note: {task} skipped: {reason}", err=True)
    typer.echo(f"results: {result['paths']['json']} (device: {result['provenance']['device']})")
    for part, rel in result["provenance"]["embeddings"].items():
        typer.echo(f"embeddings ({part}): {out / rel}")


def register(app: typer.Typer) -> None:
    """Add ``medvl evaluate``."""
    app.command("evaluate")(evaluate)
