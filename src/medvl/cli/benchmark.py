"""``medvl benchmark``: models × datasets × tasks in one command, resumable, with a merged leaderboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medvl.utils.errors import UserInputError


def benchmark(
    config: Path | None = typer.Argument(None, help="Benchmark YAML (BenchmarkConfig); or use --model/--data."),
    out: Path = typer.Option(..., "--out", "-o", help="Benchmark directory (created; reruns continue it)."),
    model: list[str] = typer.Option([], "--model", help="NAME=SPEC or SPEC: a model directory (repeatable)."),
    embeddings: list[str] = typer.Option([], "--embeddings",
                                         help="NAME=TEMPLATE: exported EmbeddingSets, e.g. emb/{dataset}/{split} (repeatable)."),
    data: list[str] = typer.Option([], "--data", help="NAME=MANIFEST or MANIFEST (repeatable)."),
    collection: list[str] = typer.Option([], "--collection", help="NAME=DATA_DIR: a shipped collection (repeatable)."),
    tasks: str | None = typer.Option(None, "--tasks", help="auto (default) or a comma list of retrieval,zeroshot,probe,classification."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. eval.probe.shots=[1,all] (repeatable)."),
    jobs: int | None = typer.Option(None, "--jobs", "-j", help="(model, dataset) units run in parallel."),
    executor: str | None = typer.Option(
        None, "--executor", help="Where units run: inline, local, submitit_local or slurm (default: config)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete earlier results in --out and start again."),
) -> None:
    """Evaluate every model on every dataset and task; one results JSON per run; leaderboard CSV/Markdown/heatmap."""
    from medvl.config.benchmark import BenchmarkConfig
    from medvl.config.loading import apply_overrides, config_from_dict, load_yaml
    from medvl.experiments.benchmark import run_benchmark
    from medvl.experiments.benchmark_paths import resolve_benchmark_paths

    def named(items: list[str], what: str) -> list[tuple[str, str]]:
        pairs = []
        for item in items:
            name, sep, value = item.partition("=")
            if not sep:
                name, value = Path(item.rstrip("/")).stem.split(".")[0] or what, item
            pairs.append((name, value))
        return pairs

    simple: dict[str, Any] = {
        "models": [{"name": n, "spec": v} for n, v in named(model, "model")]
                  + [{"name": n, "embeddings": v} for n, v in named(embeddings, "embeddings")],
        "datasets": [{"name": n, "manifest": v} for n, v in named(data, "data")]
                    + [{"collection": n, "data_dir": v} for n, v in named(collection, "collection")],
    }
    if executor is not None:
        set_ = [*set_, f"executor.kind={executor}"]
    if tasks is not None:
        simple["tasks"] = "auto" if tasks.strip() == "auto" else [t.strip() for t in tasks.split(",") if t.strip()]
    # paths written in the YAML are relative to its directory; --set and the flags, to the working directory
    if config is not None:
        raw = resolve_benchmark_paths(load_yaml(config), config.resolve().parent)
        source = str(config) + (" + command-line options" if set_ or any(simple.values()) else "")
    else:
        if not simple["models"] or not simple["datasets"]:
            raise UserInputError("give a benchmark YAML, or at least one --model/--embeddings and one --data/--collection")
        raw, source = {}, "command line"
    raw = apply_overrides(raw, set_)
    for key, value in simple.items():
        if value:
            raw[key] = list(raw.get(key) or []) + value if isinstance(value, list) and key != "tasks" else value
    cfg = config_from_dict(resolve_benchmark_paths(raw, Path.cwd()), BenchmarkConfig, source=source)
    summary = run_benchmark(cfg, out, base_dir=Path.cwd(), jobs=jobs, overwrite=overwrite, log=typer.echo)
    typer.echo(f"benchmark: {len(summary.ran)} ran, {len(summary.skipped)} already finished, {len(summary.failed)} failed, "
               f"{len(summary.skipped_runs)} recorded as skipped in {summary.seconds:.0f} s")
    leaderboard = out / "leaderboard.md"
    if leaderboard.is_file():
        typer.echo(leaderboard.read_text(encoding="utf-8"))
        typer.echo(f"leaderboard: {leaderboard} (+ leaderboard.csv, leaderboard.png, benchmark.csv)")
    for key, reason in summary.skipped_runs.items():
        typer.echo(f"  skipped {key}: {reason}")
    for key, error in summary.failed.items():
        typer.echo(f"  failed {key}: {error.splitlines()[0]} (details: {out / 'benchmark_status.json'})", err=True)
    if not summary.ok:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add ``medvl benchmark``."""
    app.command("benchmark")(benchmark)
