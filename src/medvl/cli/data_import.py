"""``medvl data import``, ``medvl data shard`` and ``medvl data label-reports``."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import typer

from medvl.utils.errors import UserInputError

_IMPORT_HELP = """Turn a public dataset's own files into a medvl manifest.

NAME is one of the adapters `medvl data datasets` lists (see docs/datasets.md).
Adapter options are given as --set key=value (values parsed as YAML), e.g.
--set uncertain=ones --set frontal_only=true."""


def register_data(data_app: typer.Typer) -> None:
    """Add ``import``, ``shard`` and ``label-reports`` to the ``data`` group."""

    @data_app.command("import", help=_IMPORT_HELP)
    def import_command(
        name: str = typer.Argument(..., help="Dataset adapter name."),
        root: Path = typer.Option(..., "--root", help="The dataset's directory, as downloaded/unpacked."),
        out: Path = typer.Option(..., "--out", help="Manifest to write (.parquet, .csv or .jsonl)."),
        set_: list[str] = typer.Option([], "--set", help="Adapter option key=value (repeatable)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing manifest."),
    ) -> None:
        import medvl
        from medvl.config import apply_overrides
        from medvl.data.adapters import ADAPTERS, import_dataset
        from medvl.data.manifest import validate_manifest, write_manifest
        from medvl.utils.io import atomic_write_json

        if name not in ADAPTERS:
            raise UserInputError(f"unknown dataset {name!r}; available: {', '.join(sorted(ADAPTERS))}")
        if out.exists() and not overwrite:
            raise UserInputError(f"{out} exists; pass --overwrite to replace it")
        options = apply_overrides({}, set_)
        spec = ADAPTERS[name]
        if spec.extracts_images and "extract_dir" not in options:
            options["extract_dir"] = str(out.parent / f"{out.name.split('.')[0]}_images")
        imported = import_dataset(name, root, options)
        manifest = imported.to_manifest()
        validate_manifest(manifest).raise_if_errors()
        write_manifest(manifest, out)
        info = {**imported.info, "medvl_version": medvl.__version__, "root": str(Path(root).resolve()),
                "manifest": str(out), "manifest_hash": manifest.hash(),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        info_path = out.parent / f"{out.name.split('.')[0]}.import.json"
        atomic_write_json(info_path, info)
        splits = ", ".join(f"{s}: {v['records']} records / {v['groups']} groups" for s, v in info["splits"].items())
        typer.echo(f"wrote {out} ({len(manifest)} records; {splits})")
        typer.echo(f"tasks: {', '.join(f'{t.name} ({t.kind}, {t.num_classes})' for t in manifest.tasks.values()) or 'none'}")
        skipped = info["skipped"]
        if skipped["counts"] or skipped["filtered"]:
            typer.echo(f"skipped: {skipped['counts']}; filtered by options: {skipped['filtered']}")
        for note in info["notes"]:
            typer.echo(f"note: {note}")
        typer.echo(f"import info: {info_path}")

    @data_app.command("datasets")
    def datasets_command(
        name: str | None = typer.Argument(None, help="Show one adapter's layout, options and command."),
    ) -> None:
        """List the dataset adapters (or show one: expected layout, options, import command)."""
        from medvl.data.adapters import ADAPTERS

        if name is None:
            for key, spec in ADAPTERS.items():
                typer.echo(f"{key:<16} {spec.summary}")
            return
        if name not in ADAPTERS:
            raise UserInputError(f"unknown dataset {name!r}; available: {', '.join(sorted(ADAPTERS))}")
        spec = ADAPTERS[name]
        typer.echo(f"{name}: {spec.summary}\n\nexpected layout:\n{spec.layout}\n\noptions (--set key=value):")
        for field, info in spec.options.model_fields.items():
            default = "required" if info.is_required() else repr(info.default if info.default_factory is None
                                                                 else info.default_factory())  # type: ignore[call-arg]
            typer.echo(f"  {field} = {default}")
        typer.echo(f"\nexample:\n  {spec.command}")

    @data_app.command("shard")
    def shard_command(
        manifest_path: Path = typer.Argument(..., help="Manifest (.parquet/.csv/.jsonl)."),
        out: Path = typer.Option(..., "--out", help="Empty directory for the shards and index.json."),
        shard_size: int = typer.Option(1000, "--shard-size", help="Records per shard."),
        split: str | None = typer.Option(None, "--split", help="Only this split."),
        on_bad_sample: str = typer.Option("error", "--on-bad-sample", help="error or skip (counted in index.json)."),
    ) -> None:
        """Write WebDataset tar shards (+ index.json) from any manifest."""
        from medvl.data.manifest import read_manifest
        from medvl.data.shards import write_shards

        if on_bad_sample not in ("error", "skip"):
            raise UserInputError("--on-bad-sample must be error or skip")
        manifest = read_manifest(manifest_path)
        try:
            index = write_shards(manifest, out, shard_size, split=split, on_bad_sample=on_bad_sample)  # type: ignore[arg-type]
        except (FileNotFoundError, FileExistsError, ValueError) as exc:  # write_shards' input errors
            raise UserInputError(str(exc)) from None
        typer.echo(f"wrote {len(index.shards)} shards with {index.total} records to {out}")
        if index.meta.get("skipped"):
            typer.echo(f"skipped {len(index.meta['skipped'])} records (listed in {out / 'index.json'})")

    @data_app.command("label-reports")
    def label_reports_command(
        input_path: Path = typer.Argument(..., metavar="INPUT",
                                          help="CSV/JSONL/Parquet with a text column, or a directory of .txt reports."),
        out: Path = typer.Option(..., "--out", help="Output CSV (or .parquet): id + 14 CheXpert columns (1, 0, -1, blank)."),
        text_column: str = typer.Option("report", "--text-column", help="Column holding the report text."),
        id_column: str = typer.Option("id", "--id-column", help="Column holding the report id."),
        sections: str = typer.Option("findings,impression", "--sections",
                                     help="Sections to label; 'all' labels the whole text."),
        fallback: str = typer.Option("last_paragraph", "--fallback",
                                     help="When none of the sections exists: last_paragraph or none."),
        global_negations: bool = typer.Option(
            False, "--global-negations/--no-global-negations",
            help="Read 'no acute cardiopulmonary process', 'the lungs are clear', … as negating the acute "
                 "findings they cover (off: left unmentioned, as the CheXpert labeller does)."),
        old_fractures: str = typer.Option("positive", "--old-fractures",
                                          help="Old/healed fractures: positive (CheXpert's convention) or ignore."),
        anatomy_window: int = typer.Option(6, "--anatomy-window", min=1,
                                           help="Words after 'heart size' etc. searched for 'enlarged'/'normal'."),
    ) -> None:
        """Label radiology reports with the 14 CheXpert observations (negation/uncertainty aware)."""
        import pandas as pd

        from medvl.data.adapters.image_text import read_records_file
        from medvl.data.labeller import CHEXPERT_CLASSES, ReportLabeller
        from medvl.utils.errors import InvalidArgumentError
        from medvl.utils.io import atomic_open

        if input_path.is_dir():
            paths = sorted(input_path.rglob("*.txt"))
            if not paths:
                raise InvalidArgumentError(f"no .txt reports under {input_path}")
            ids = [p.relative_to(input_path).with_suffix("").as_posix() for p in paths]
            texts = [p.read_text(encoding="utf-8", errors="replace") for p in paths]
        elif input_path.is_file():
            table = read_records_file(input_path)
            missing = [c for c in (text_column, id_column) if c not in table.columns]
            if missing:
                raise InvalidArgumentError(f"{input_path} has no column(s) {missing}; found {list(table.columns)}")
            ids = [str(v) for v in table[id_column]]
            texts = [_report_text(v) for v in table[text_column]]
        else:
            raise InvalidArgumentError(f"{input_path} does not exist")

        for flag, value, allowed in (("--fallback", fallback, ("last_paragraph", "none")),
                                     ("--old-fractures", old_fractures, ("positive", "ignore"))):
            if value not in allowed:
                raise InvalidArgumentError(f"{flag} must be one of {', '.join(allowed)}; got {value!r}")
        whole = sections.strip().lower() == "all"
        labeller = ReportLabeller(sections=[s.strip() for s in sections.split(",") if s.strip()] if not whole else (),
                                  fallback=fallback, global_negations=global_negations,  # type: ignore[arg-type]
                                  old_fractures=old_fractures, anatomy_window=anatomy_window)  # type: ignore[arg-type]
        codes = labeller.label_reports(texts, sections=not whole)
        frame = pd.DataFrame(codes, columns=list(CHEXPERT_CLASSES))
        frame.insert(0, "id", ids)
        if out.suffix == ".parquet":
            with atomic_open(out, "wb", encoding=None) as handle:
                frame.to_parquet(handle, index=False)
        else:
            with atomic_open(out, "w") as handle:
                frame.to_csv(handle, index=False)
        counts = {code: {c: int((frame[c] == value).sum()) for c in CHEXPERT_CLASSES if (frame[c] == value).any()}
                  for code, value in (("positive", 1), ("uncertain", -1), ("negative", 0))}
        typer.echo(f"labelled {len(frame)} reports → {out}")
        for code, per_class in counts.items():
            shown = ", ".join(f"{c} {n}" for c, n in per_class.items()) or "none"
            typer.echo(f"  {code:<9} {shown}")


def _report_text(value: object) -> str:
    """One report from a table cell: missing → ``""``; a list of texts (a manifest's ``texts``) → joined by newlines."""
    import numpy as np
    import pandas as pd

    if isinstance(value, (list, tuple, np.ndarray)):
        return "\n".join(str(v) for v in value if not (isinstance(v, float) and np.isnan(v)))
    return "" if pd.isna(value) else str(value)
