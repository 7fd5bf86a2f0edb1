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
    from medvl.config.loading import apply_overrides, config_from_dict, load_config
    from medvl.experiments.benchmark import run_benchmark

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
    if config is not None:
        cfg = load_config(config, BenchmarkConfig, overrides=set_)
        extra = {k: v for k, v in simple.items() if v}
        if extra:
            data_dict = cfg.model_dump(mode="json")
            for key, value in extra.items():
                data_dict[key] = data_dict.get(key, []) + value if isinstance(value, list) and key != "tasks" else value
            cfg = config_from_dict(data_dict, BenchmarkConfig, source=f"{config} + command-line options")
        base = config.resolve().parent
    else:
        if not simple["models"] or not simple["datasets"]:
            raise UserInputError("give a benchmark YAML, or at least one --model/--embeddings and one --data/--collection")
        cfg = config_from_dict(apply_overrides(simple, set_), BenchmarkConfig, source="command line")
        base = Path.cwd()
    summary = run_benchmark(cfg, out, base_dir=base, jobs=jobs, overwrite=overwrite, log=typer.echo)
    typer.echo(f"benchmark: {len(summary.ran)} ran, {len(summary.skipped)} already finished, {len(summary.failed)} failed "
               f"in {summary.seconds:.0f} s")
    leaderboard = out / "leaderboard.md"
    if leaderboard.is_file():
        typer.echo(leaderboard.read_text(encoding="utf-8"))
        typer.echo(f"leaderboard: {leaderboard} (+ leaderboard.csv, leaderboard.png, benchmark.csv)")
    for key, error in summary.failed.items():
        typer.echo(f"  failed {key}: {error.splitlines()[0]} (details: {out / 'benchmark_status.json'})", err=True)
    if not summary.ok:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add ``medvl benchmark``."""
    app.command("benchmark")(benchmark)
