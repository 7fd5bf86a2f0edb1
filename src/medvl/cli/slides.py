"""``medvl slides synth|tile|embed``: from whole-slide image files to feature bags (docs/slides.md)."""

from __future__ import annotations

from pathlib import Path

import typer

slides_app = typer.Typer(help="Whole-slide images: synthetic slides, tissue tiling, patch features.",
                         no_args_is_help=True)


@slides_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Output directory (slides/, reports.json, splits/, patch_encoder/)."),
    n: int = typer.Option(60, "--n", min=12, help="Number of biopsies (ISUP grades 0–5 in equal shares)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Same seed, same slides, reports and splits."),
    folds: int = typer.Option(5, "--folds", min=2, help="Cross-validation folds (by patient, grade-stratified)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty output directory."),
) -> None:
    """Generate synthetic prostate biopsies (pyramidal TIFFs whose texture follows the ISUP grade) with reports."""
    from medvl.experiments.prostate import write_prostate_configs
    from medvl.slides.synthetic import generate_prostate_set

    summary = generate_prostate_set(out, n=n, seed=seed, n_folds=folds, overwrite=overwrite, log=typer.echo)
    experiment = write_prostate_configs(out)
    typer.echo(f"wrote {summary['n_slides']} slides of {summary['n_patients']} patients to {out / 'slides'} "
               f"(grades {summary['grades']}, {summary['n_test']} test)")
    typer.echo(f"patch encoder (seeded random tiny CNN, a stand-in): {out / 'patch_encoder'}")
    typer.echo(f"study configs: {experiment} (see docs/slides.md for the next commands)")


@slides_app.command("tile")
def tile(
    slides: list[Path] = typer.Argument(..., help="Slide files or directories of slides."),
    out: Path = typer.Option(..., "--out", help="Directory for <slide_id>.tiles.parquet (+ .tissue.jpg)."),
    mpp: float | None = typer.Option(None, "--mpp", help="Target resolution in µm per pixel (e.g. 0.5)."),
    magnification: float | None = typer.Option(None, "--magnification", help="Target objective power (e.g. 20)."),
    patch_size: int = typer.Option(256, "--patch-size", min=1, help="Patch side in pixels at the target resolution."),
    region_size: int | None = typer.Option(None, "--region-size",
                                           help="Region side (a multiple of the patch size; default: one patch)."),
    tissue_threshold: float = typer.Option(0.25, "--tissue-threshold", help="Least tissue fraction of a kept region."),
    slide_mpp: float | None = typer.Option(None, "--slide-mpp", help="Level-0 µm/px when the files do not say."),
    base_magnification: float | None = typer.Option(None, "--base-magnification",
                                                    help="Level-0 objective power when the files do not say."),
    backend: str = typer.Option("auto", "--backend", help="auto (OpenSlide if installed), openslide or tifffile."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Tile slides again that already have a tiles file."),
) -> None:
    """Find the tissue (Otsu on a thumbnail) and list patch coordinates on a grid at a resolution."""
    from medvl.slides.tiling import TilingSpec, tile_slides

    spec = TilingSpec(patch_size=patch_size, region_size=region_size, mpp=mpp, magnification=magnification,
                      base_magnification=base_magnification, slide_mpp=slide_mpp, tissue_threshold=tissue_threshold)
    summary = tile_slides(list(slides), out, spec, backend=backend, overwrite=overwrite, log=typer.echo)
    n_patches = sum(s["n_patches"] for s in summary["slides"].values())
    typer.echo(f"tiled {len(summary['slides'])} slides: {n_patches} patches -> {out}")


@slides_app.command("embed")
def embed(
    tiles: Path = typer.Argument(..., help="Directory of <slide_id>.tiles.parquet files (medvl slides tile)."),
    model: str = typer.Option(..., "--model", help="Image encoder: a medvl run/model, Hugging Face, open_clip "
                                                  "or timm directory (or hub id)."),
    out: Path = typer.Option(..., "--out", help="Directory for <slide_id>.safetensors feature bags."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    workers: int = typer.Option(4, "--workers", min=0,
                                 help="Reader threads ahead of the encoder (0: read in the encoding thread)."),
    device: str = typer.Option("cpu", "--device"),
    output: str = typer.Option("features", "--output", help="features (backbone) or embeds (joint space)."),
    image_size: int | None = typer.Option(None, "--image-size", help="Resize patches to this side (default: as tiled)."),
    mean: list[float] = typer.Option([0.5], "--mean", help="Normalisation mean (models without their own)."),
    std: list[float] = typer.Option([0.5], "--std", help="Normalisation std (models without their own)."),
    backend: str = typer.Option("auto", "--backend", help="auto, openslide or tifffile."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="Allow a model directory's own code to run."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Embed again slides that already have features."),
) -> None:
    """Encode every tiled patch; a rerun after a kill continues where it stopped."""
    from medvl.slides.embed import EmbedOptions, embed_tiles

    if output not in ("features", "embeds"):
        raise typer.BadParameter("--output must be features or embeds")
    options = EmbedOptions(batch_size=batch_size, workers=workers, device=device, output=output,  # type: ignore[arg-type]
                           image_size=image_size, mean=tuple(mean), std=tuple(std), backend=backend,
                           trust_remote_code=trust_remote_code)
    summary = embed_tiles(tiles, model, out, options, overwrite=overwrite, log=typer.echo)
    typer.echo(f"{len(summary['slides'])} slides, {summary['encoded']} patches encoded -> {out}")


def register(app: typer.Typer) -> None:
    """Add the ``slides`` command group."""
    app.add_typer(slides_app, name="slides")
