"""``medvl run``, ``medvl sweep`` and ``medvl report``: studies over λ × folds × seeds."""

from __future__ import annotations

from pathlib import Path

import typer


def _sweep(config_path: Path, out: Path, overrides: list[str], jobs: int | None, overwrite: bool) -> Path:
    from medvl.config.experiment import ExperimentConfig
    from medvl.config.loading import load_config
    from medvl.experiments.cell import run_cell
    from medvl.experiments.sweep import run_sweep
    from medvl.utils.rundir import prepare_run_dir

    config = load_config(config_path, ExperimentConfig, overrides)
    # A sweep directory is always resumable: finished cells are kept unless --overwrite.
    prepare_run_dir(out, overwrite=overwrite, resume=not overwrite)
    summary = run_sweep(config, out, run_cell, experiment_dir=config_path.resolve().parent, jobs=jobs,
                        log=typer.echo)
    typer.echo(f"sweep: {len(summary.ran)} ran, {len(summary.skipped)} skipped, {len(summary.failed)} failed "
               f"in {summary.seconds:.0f} s")
    for key, error in summary.failed.items():
        typer.echo(f"  {key}: {error}", err=True)
    if not summary.ok:
        raise typer.Exit(code=1)
    return out


def register(app: typer.Typer) -> None:
    """Add ``run``, ``sweep`` and ``report``."""

    @app.command("sweep")
    def sweep(
        config: Path = typer.Argument(..., exists=True, dir_okay=False, help="Experiment YAML."),
        out: Path = typer.Option(..., "--out", "-o", help="Sweep directory (created; reruns continue it)."),
        set_: list[str] = typer.Option([], "--set", help="Override a config key: a.b.c=value (repeatable)."),
        jobs: int | None = typer.Option(None, "--jobs", "-j", help="Cells run in parallel (default: config)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Delete finished cells and start again."),
        report: bool = typer.Option(True, "--report/--no-report", help="Write report.md when the sweep ends."),
    ) -> None:
        """Run every cell of an experiment; finished cells are skipped, so a killed sweep continues."""
        _sweep(config, out, set_, jobs, overwrite)
        if report:
            from medvl.experiments.report import build_report

            files = build_report(out)
            typer.echo(f"report: {files.report}")

    @app.command("report")
    def report(
        sweep_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="A sweep directory."),
    ) -> None:
        """Aggregate a sweep: median (Q1–Q3), mean ± std, Δ% vs the baseline, plots, CSVs, report.md."""
        from medvl.experiments.report import build_report

        files = build_report(sweep_dir)
        typer.echo(f"report: {files.report}")
        typer.echo(f"tables: {', '.join(str(p) for p in files.tables)}")
        typer.echo(f"figures: {len(files.figures)} files in {sweep_dir / 'figures'}")

    @app.command("run")
    def run(
        config: Path | None = typer.Argument(None, dir_okay=False,
                                             help="Experiment YAML (default: the quickstart study)."),
        out: Path = typer.Option(Path("runs/quickstart"), "--out", "-o", help="Sweep directory."),
        data_dir: Path = typer.Option(Path("data/synthetic"), "--data", help="Where the synthetic data lives."),
        set_: list[str] = typer.Option([], "--set", help="Override a config key: a.b.c=value (repeatable)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Start the study again from scratch."),
    ) -> None:
        """Run a study end to end; with no arguments, the quickstart on the embedded synthetic data."""
        from medvl.experiments.quickstart import prepare_quickstart

        if config is None:
            config = prepare_quickstart(data_dir, out.parent / "quickstart_config", log=typer.echo)
        _sweep(config, out, set_, None, overwrite)
        from medvl.experiments.report import build_report

        files = build_report(out)
        typer.echo(files.report.read_text(encoding="utf-8"))
        typer.echo(f"report: {files.report}")
