"""``medvl data …``: the data command group.

The group is assembled from several modules so that each area owns its own file:
``cli/data.py`` (check, split, leakage), ``cli/data_synth.py`` (synth, gallery) and
``cli/data_import.py`` (import, shard). Each contributes ``register_data(data_app)``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from medvl.utils.errors import UserInputError

if TYPE_CHECKING:
    from medvl.data.manifest import Manifest

#: Modules that add subcommands to ``medvl data``.
DATA_COMMAND_MODULES: tuple[str, ...] = ("medvl.cli.data_synth", "medvl.cli.data_import", "medvl.cli.data_protocols")


def _read(manifest: Path, root: Path | None) -> Manifest:
    """Read a manifest (a :class:`ManifestError` exits with code 2 via the central handler)."""
    from medvl.data.manifest import read_manifest

    return read_manifest(manifest, root=root)


def check_command(
    manifest: Path = typer.Argument(..., help="Manifest file (.parquet, .csv or .jsonl)."),
    root: Path | None = typer.Option(None, "--root", help="Image root (default: stored root / the manifest's folder)."),
    verify_files: bool = typer.Option(
        True, "--verify-files/--no-verify-files", help="Open and decode every referenced file."
    ),
    decode: bool = typer.Option(
        True, "--decode/--no-decode", help="With --verify-files: decode each file (else existence and permissions only)."
    ),
    require_texts: bool = typer.Option(False, "--require-texts", help="Records without any text are errors."),
    workers: int = typer.Option(4, "--workers", min=1, help="Threads for the file scan."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the summary as JSON here."),
) -> None:
    """Validate a manifest and print its summary (exit code 1 when anything is wrong)."""
    from rich.console import Console

    from medvl.data.dataset import preflight
    from medvl.data.manifest import validate_manifest
    from medvl.data.splits import find_group_leakage
    from medvl.data.summary import render_summary, summarize_manifest
    from medvl.utils.io import atomic_write_json

    m = _read(manifest, root)
    validation = validate_manifest(m, require_texts=require_texts)
    problems = preflight(m, decode=decode, workers=workers) if verify_files else None
    summary = summarize_manifest(
        m,
        validation=validation,
        file_problems=problems,
        files_checked=len(m) if verify_files else None,
        leakage=find_group_leakage(m),
    )
    summary["manifest"] = str(manifest)
    render_summary(summary, Console())
    if json_out is not None:
        atomic_write_json(json_out, summary)
    if not summary["ok"]:
        raise typer.Exit(code=1)


def split_command(
    manifest: Path = typer.Argument(..., help="Manifest to split."),
    out: Path = typer.Option(..., "--out", help="Where to write the split manifest (.parquet, .csv or .jsonl)."),
    folds: int = typer.Option(5, "--folds", min=0, help="Cross-validation folds over the training records (0 = none)."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", min=0.0, max=0.99, help="Share of records held out as test."),
    val_fraction: float = typer.Option(0.0, "--val-fraction", min=0.0, max=0.99, help="Share of records for validation."),
    seed: int = typer.Option(0, "--seed", help="Seed of the assignment."),
    task: str | None = typer.Option(None, "--task", help="Task whose labels are stratified (default: sizes only)."),
    keep_test: bool = typer.Option(False, "--keep-test", help="Keep records already in 'test' (e.g. an official split)."),
    root: Path | None = typer.Option(None, "--root", help="Image root to store with the output."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Assign grouped, stratified train/val/test splits and folds; write a new manifest."""
    from rich.console import Console

    from medvl.data.manifest import write_manifest
    from medvl.data.splits import assign_splits, find_group_leakage
    from medvl.data.summary import render_summary, summarize_manifest

    if out.exists() and not overwrite:
        raise UserInputError(f"{out} exists; pass --overwrite to replace it")
    m = _read(manifest, root)
    result = assign_splits(
        m,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        n_folds=folds,
        task=task,
        seed=seed,
        keep_existing_test=keep_test,
    )
    write_manifest(result, out)
    leakage = find_group_leakage(result)
    render_summary(summarize_manifest(result, leakage=leakage), Console())
    typer.echo(f"wrote {out}")


def leakage_command(
    manifest: Path = typer.Argument(..., help="Manifest to check."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the report as JSON here."),
) -> None:
    """Report every group (patient/study) found in two splits or two folds; exit code 1 if any."""
    from medvl.data.splits import find_group_leakage
    from medvl.utils.io import atomic_write_json

    m = _read(manifest, None)
    report = find_group_leakage(m)
    if json_out is not None:
        atomic_write_json(json_out, report.to_dict())
    typer.echo(
        f"{report.n_groups} groups; {len(report.split_leaks)} in several splits, {len(report.fold_leaks)} in several folds"
    )
    for leak in report.split_leaks + report.fold_leaks:
        where = leak.get("splits") or leak.get("folds")
        typer.echo(f"  group {leak['group']!r}: {where} (e.g. records {leak['example_ids']})")
    if not report.ok:
        raise typer.Exit(code=1)


def register_data(data_app: typer.Typer) -> None:
    """Add this module's ``data`` subcommands (check, split, leakage)."""
    data_app.command("check")(check_command)
    data_app.command("split")(split_command)
    data_app.command("leakage")(leakage_command)


def register(app: typer.Typer) -> None:
    """Add the ``data`` group to ``app``."""
    data_app = typer.Typer(help="Datasets: synthesise, import, validate, split and shard.", no_args_is_help=True)
    register_data(data_app)
    for name in DATA_COMMAND_MODULES:
        importlib.import_module(name).register_data(data_app)
    app.add_typer(data_app, name="data")
