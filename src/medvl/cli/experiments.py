"""``medvl run``, ``medvl sweep`` and ``medvl report``: studies over λ × folds × seeds."""

from __future__ import annotations

from pathlib import Path

import typer


def _sweep(config_path: Path, out: Path, overrides: list[str], jobs: int | None, overwrite: bool,
           executor: str | None = None) -> Path:
    from medvl.config.experiment import ExperimentConfig
    from medvl.config.loading import load_config
    from medvl.experiments.cell import run_cell
    from medvl.experiments.sweep import run_sweep
    from medvl.utils.rundir import check_run_dir, locked_run_dir

    if executor is not None:
        overrides = [*overrides, f"executor.kind={executor}"]
    check_run_dir(out, overwrite=overwrite, resume=not overwrite)  # in use by another live sweep?
    config = load_config(config_path, ExperimentConfig, overrides)
    # A sweep directory is always resumable: finished cells are kept unless --overwrite. One controller
    # at a time: the lock is held until the sweep ends (each cell's run directory has its own).
    with locked_run_dir(out, overwrite=overwrite, resume=not overwrite):
        summary = run_sweep(config, out, run_cell, experiment_dir=config_path.resolve().parent, jobs=jobs,
                            log=typer.echo)
    typer.echo(f"sweep: {len(summary.ran)} ran, {len(summary.skipped)} skipped, {len(summary.failed)} failed "
               f"in {summary.seconds:.0f} s")
    for key, error in summary.failed.items():
        typer.echo(f"  {key}: {error}", err=True)
    if not summary.ok:
        raise typer.Exit(code=1)
    return out


def _print_status(out: Path) -> None:
    from collections import Counter

    from medvl.experiments.sweep import sweep_status

    rows = sweep_status(out)
    width = max(len(row["cell"]) for row in rows)
    for row in rows:
        detail = ""
        if row.get("job_id"):
            detail += f" job {row['job_id']} ({row.get('executor')})"
        if row["status"] == "running" and row.get("process"):
            where = row["process"]
            detail += f" pid {where['pid']} on {where['host']}" + ("" if row.get("verified") else " (not verifiable from here)")
        if row["status"] == "failed" and row.get("error"):
            detail += f": {row['error']}"
        typer.echo(f"{row['cell']:<{width}}  {row['status']:<11}{detail}")
    counts = Counter(row["status"] for row in rows)
    typer.echo(", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + f" (of {len(rows)} cells)")


def register(app: typer.Typer) -> None:
    """Add ``run``, ``sweep`` and ``report``."""

    @app.command("sweep")
    def sweep(
        config: Path | None = typer.Argument(None, exists=True, dir_okay=False,
                                             help="Experiment YAML (not needed with --status)."),
        out: Path = typer.Option(..., "--out", "-o", help="Sweep directory (created; reruns continue it)."),
        set_: list[str] = typer.Option([], "--set", help="Override a config key: a.b.c=value (repeatable)."),
        jobs: int | None = typer.Option(None, "--jobs", "-j", help="Cells run in parallel (default: config)."),
        executor: str | None = typer.Option(
            None, "--executor", help="Where cells run: inline, local, submitit_local or slurm (default: config)."),
        status: bool = typer.Option(False, "--status", help="Show each cell's state in --out and exit."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Delete finished cells and start again."),
        report: bool = typer.Option(True, "--report/--no-report", help="Write report.md when the sweep ends."),
    ) -> None:
        """Run every cell of an experiment; finished cells are skipped, so a killed sweep continues."""
        if status:
            _print_status(out)
            return
        if config is None:
            raise typer.BadParameter("give the experiment YAML (or --status to inspect --out)", param_hint="CONFIG")
        _sweep(config, out, set_, jobs, overwrite, executor)
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
