"""``medvl evaluate``: retrieval, classification, zero-shot and linear probes on one split (see docs/evaluation.md)."""

from __future__ import annotations

from pathlib import Path

import typer


def evaluate(
    model: str | None = typer.Option(
        None, "--model", help="Model to evaluate: a medvl run/model directory, a Hugging Face, open_clip or timm "
        "directory, or an hf-hub: id (told apart by its metadata; see docs/models.md)."),
    data: Path | None = typer.Option(None, "--data", help="Manifest (.parquet/.csv/.jsonl) of the data to evaluate on."),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", help="Evaluate precomputed embeddings instead: an EmbeddingSet directory or an .npz "
        "(arrays image, text[, caption_to_image, image_ids]); no --data needed."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Alias of --model (a medvl run/model directory)."),
    hf_model: Path | None = typer.Option(None, "--hf-model", help="Alias of --model (a Hugging Face directory)."),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Allow a Hugging Face directory's own Python code (auto_map) to run. "
        "Off by default: read that code first."),
    tasks: str | None = typer.Option(None, "--tasks", help="Comma list of retrieval,classification,zeroshot,probe,captioning,vqa."),
    config: Path | None = typer.Option(None, "--config", help="Evaluation config YAML (EvaluationConfig)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set probe.seeds=[0,1] (repeatable)."),
    split: str | None = typer.Option(None, "--split", help="Split to evaluate (default: test)."),
    out: Path | None = typer.Option(None, "--out", help="Output directory (default: <run dir>/eval-<split>)."),
    which: str = typer.Option("best", "--which", help="Checkpoint of a run directory: best or last."),
    root: Path | None = typer.Option(None, "--root", help="Directory image paths are relative to."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
) -> None:
    """Evaluate a model (or precomputed embeddings); writes results.json, metrics.csv and results.md."""
    from medvl.config.evaluation import EvaluationConfig
    from medvl.config.loading import load_config
    from medvl.models.loading import detect_format
    from medvl.utils.rundir import check_run_dir, locked_run_dir

    given = [name for name, value in (("--model", model), ("--checkpoint", checkpoint), ("--hf-model", hf_model),
                                      ("--embeddings", embeddings)) if value is not None]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --model (or its aliases --checkpoint/--hf-model) "
                                 f"or --embeddings; got {', '.join(given) or 'none'}")
    spec = model if model is not None else (checkpoint or hf_model)
    if embeddings is None and data is None:
        raise typer.BadParameter("--data is required to evaluate a model (only --embeddings needs none)")
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
    if out is not None:  # an output directory in use (or kept without --overwrite) is named first
        check_run_dir(out, overwrite=overwrite, resumable=False)  # writes nothing yet
    fmt = detect_format(spec).format if spec is not None else "embeddings"  # unknown formats fail here, early
    if out is None:  # default: inside a medvl run/model directory, never inside someone else's checkpoint
        if spec is None or fmt not in ("medvl_run", "medvl_model"):
            raise typer.BadParameter("--out is required unless --model is a medvl run or model directory")
        out = Path(spec) / f"eval-{cfg.split}"
        check_run_dir(out, overwrite=overwrite, resumable=False)

    from medvl.evaluation.results import markdown_table, metric_rows, notes_markdown
    from medvl.evaluation.suite import run_evaluation

    try:
        with locked_run_dir(out, overwrite=overwrite, resumable=False):  # one writer; removed again if it fails
            result = run_evaluation(cfg, manifest=data, out_dir=out, model=spec, embeddings=embeddings, which=which,
                                    root=root, trust_remote_code=trust_remote_code)
    except (FileNotFoundError, ValueError) as exc:  # domain errors (UserInputError) reach cli.main's handler
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    prov = result["provenance"]
    typer.echo(markdown_table(metric_rows(result["tasks"], prov)) + notes_markdown(result["tasks"]))
    for task, res in result["tasks"].items():
        reason = (res.get("info") or {}).get("skipped")
        if reason:
            typer.echo(f"note: {task} skipped: {reason}", err=True)
    device = f" (device: {prov['device']})" if prov.get("device") else ""
    typer.echo(f"results: {result['paths']['json']}{device}")
    for part, rel in (prov.get("embeddings") or {}).items() if isinstance(prov.get("embeddings"), dict) else ():
        typer.echo(f"embeddings ({part}): {out / rel}")


def register(app: typer.Typer) -> None:
    """Add ``medvl evaluate``."""
    app.command("evaluate")(evaluate)
