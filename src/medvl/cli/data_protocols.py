"""``medvl data subset`` (class-balanced evaluation subsets) and ``medvl data harmonise`` (shared CXR labels)."""

from __future__ import annotations

from pathlib import Path

import typer

from medvl.utils.errors import UserInputError


def register_data(data_app: typer.Typer) -> None:
    """Add ``subset`` and ``harmonise`` to the ``data`` group."""

    @data_app.command("subset")
    def subset_command(
        manifest: Path = typer.Argument(..., help="Manifest to draw from."),
        out: Path = typer.Option(..., "--out", help="Manifest to write (.parquet, .csv or .jsonl)."),
        task: str = typer.Option(..., "--task", help="Task whose classes are balanced."),
        classes: str = typer.Option(..., "--classes", help="Comma-separated classes, in the order of the new task."),
        per_class: str = typer.Option(..., "--per-class", help="Records per class: 200, or per split: train=350,test=60."),
        seed: int = typer.Option(0, "--seed", help="Seed of the (row-order independent) selection."),
        new_task: str | None = typer.Option(None, "--new-task", help="Name of the balanced task (default <task>_<C>x<n>)."),
        novel: str = typer.Option("", "--novel", help="Comma-separated classes marked novel in the new task."),
        one_per_group: bool = typer.Option(False, "--one-per-group", help="At most one record per group (patient)."),
        others_negative: bool = typer.Option(False, "--others-negative",
                                             help="Multilabel: every class outside --classes must be negative."),
        root: Path | None = typer.Option(None, "--root", help="Image root of MANIFEST (default: stored with it)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    ) -> None:
        """Draw an exact, seeded class-balanced subset as a new single-label task (DLILP's 5x200 sets)."""
        from medvl.data.manifest import read_manifest, write_manifest
        from medvl.data.subsets import balanced_subset, parse_per_class

        if out.exists() and not overwrite:
            raise UserInputError(f"{out} exists; pass --overwrite to replace it")
        names = [c.strip() for c in classes.split(",") if c.strip()]
        result = balanced_subset(read_manifest(manifest, root=root), task, names, parse_per_class(per_class), seed=seed,
                                 new_task=new_task, novel=[c.strip() for c in novel.split(",") if c.strip()],
                                 one_per_group=one_per_group, others_negative=others_negative)
        write_manifest(result, out)
        added = next(t for t in result.tasks if t not in read_manifest(manifest, root=root).tasks)
        counts = result.records.groupby("split")[f"labels.{added}"].value_counts().sort_index()
        typer.echo(f"wrote {out}: {len(result)} records, task {added!r} over {names}")
        typer.echo("per split and class: " + ", ".join(f"{s}/{names[c]}: {n}" for (s, c), n in counts.items()))

    @data_app.command("harmonise")
    def harmonise_command(
        manifest: Path = typer.Argument(..., help="Manifest of one chest X-ray dataset."),
        dataset: str = typer.Option(..., "--dataset", help="Its entry in the table: chexpert, mimic, nih, padchest, vindr, rsna, siim."),
        out: Path = typer.Option(..., "--out", help="Manifest to write."),
        table: str = typer.Option("cxr", "--table", help="Harmonisation table: built-in name or YAML path."),
        new_task: str | None = typer.Option(None, "--new-task", help="Name of the shared task (default: the table's name)."),
        root: Path | None = typer.Option(None, "--root", help="Image root of MANIFEST."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    ) -> None:
        """Add a multilabel task over the shared CXR label space (unannotated classes masked)."""
        from medvl.data.harmonise import harmonise
        from medvl.data.manifest import read_manifest, write_manifest

        if out.exists() and not overwrite:
            raise UserInputError(f"{out} exists; pass --overwrite to replace it")
        result, info = harmonise(read_manifest(manifest, root=root), dataset, table, new_task=new_task)
        write_manifest(result, out)
        typer.echo(f"wrote {out}: task {info['task']!r} ({len(result.tasks[info['task']].classes)} shared classes); "
                   f"annotated: {', '.join(info['annotated_classes'])}")
        if info["left_out_source_classes"]:
            typer.echo(f"note: source classes not in the table (left out): {info['left_out_source_classes']}")
