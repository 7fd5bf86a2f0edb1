"""``medvl data synth`` and ``medvl data gallery``: the embedded synthetic chest-radiograph dataset."""

from __future__ import annotations

from pathlib import Path

import typer


def register_data(data_app: typer.Typer) -> None:
    """Add ``synth``, ``vqa-synth`` and ``gallery`` to the ``data`` group."""

    @data_app.command("synth")
    def synth(
        out: Path = typer.Option(..., "--out", help="Output directory (images/, manifest.parquet, synth_summary.json)."),
        n: int = typer.Option(2000, "--n", min=1, help="Number of images."),
        seed: int = typer.Option(0, "--seed", min=0, help="Dataset seed; the same seed gives byte-identical output."),
        size: int = typer.Option(128, "--size", min=32, max=2048, help="Image side in pixels."),
        workers: int = typer.Option(1, "--workers", min=1, help="Rendering processes (output does not depend on it)."),
        test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of images (whole patients) in test."),
        val_fraction: float = typer.Option(0.0, "--val-fraction", help="Share of images (whole patients) in val."),
        n_folds: int = typer.Option(5, "--folds", help="Cross-validation folds over train patients (0: none)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty output directory."),
    ) -> None:
        """Generate synthetic chest radiographs with reports and labels (a smoke-test / teaching dataset)."""
        from pydantic import ValidationError

        from medvl.data.synthetic import SynthConfig, generate_dataset

        try:
            config = SynthConfig(n=n, seed=seed, size=size, workers=workers, test_fraction=test_fraction,
                                 val_fraction=val_fraction, n_folds=n_folds)
        except ValidationError as exc:
            raise typer.BadParameter(str(exc)) from None
        summary = generate_dataset(out, config, overwrite=overwrite)
        _print_summary(out, summary)

    @data_app.command("vqa-synth")
    def vqa_synth(
        manifest: Path = typer.Option(..., "--manifest", help="Manifest written by `medvl data synth`."),
        out: Path = typer.Option(..., "--out", help="VQA manifest to write (.parquet/.csv/.jsonl)."),
        seed: int = typer.Option(0, "--seed", min=0, help="Seeds which findings are asked about."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
    ) -> None:
        """Questions about the synthetic radiographs (presence, laterality, abnormality, severity) answered
        from their ground truth: a VQA manifest for `medvl evaluate --tasks vqa`."""
        from medvl.data.manifest import ManifestError, read_manifest, write_manifest
        from medvl.data.synthetic.vqa import build_synthetic_vqa

        if out.exists() and not overwrite:
            typer.echo(f"error: {out} exists; pass --overwrite to replace it", err=True)
            raise typer.Exit(2)
        try:
            vqa = build_synthetic_vqa(read_manifest(manifest), seed=seed)
        except (ManifestError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        out.parent.mkdir(parents=True, exist_ok=True)
        write_manifest(vqa, out)
        counts = vqa.records.groupby(["question_type", "answer_type"]).size()
        typer.echo(f"wrote {len(vqa)} questions about {vqa.records['image_id'].nunique()} images to {out}")
        for (qtype, atype), n in counts.items():
            typer.echo(f"  {qtype:<12} {atype:<7} {n}")

    @data_app.command("gallery")
    def gallery(
        out: Path = typer.Option(Path("synthetic_examples.png"), "--out",
                                 help="PNG to write (docs' figure: --out docs/synthetic_examples.png --size 192)."),
        seed: int = typer.Option(0, "--seed", min=0, help="Dataset seed of the cases shown."),
        size: int = typer.Option(256, "--size", min=64, max=1024, help="Image side in pixels."),
    ) -> None:
        """Render a grid of example radiographs with their reports, plus one row per finding."""
        from medvl.data.synthetic.gallery import save_gallery

        path = save_gallery(out, seed=seed, size=size)
        typer.echo(f"wrote {path}")


def _print_summary(out: Path, summary: dict[str, object]) -> None:
    """Human-readable summary of a generated dataset."""
    typer.echo(f"wrote {summary['n_images']} images of {summary['n_patients']} patients to {out} "
               f"({summary['images_per_second']} images/s)")
    typer.echo(f"manifest: {out / str(summary['manifest'])}  (hash {str(summary['manifest_hash'])[:12]})")
    prevalence = summary["prevalence"]
    report_prevalence = summary["report_prevalence"]
    assert isinstance(prevalence, dict) and isinstance(report_prevalence, dict)
    typer.echo(f"{'finding':<18}{'image':>8}{'report':>8}")
    for name, value in prevalence.items():
        typer.echo(f"{name:<18}{value:>8.3f}{report_prevalence[name]:>8.3f}")
    typer.echo(f"findings per image: {summary['findings_per_image']}")
    typer.echo(f"severity grades:    {summary['severity_grades']}")
    typer.echo(f"splits:             {summary['splits']}")
    typer.echo(f"report/image label agreement: {summary['report_agreement']}")
