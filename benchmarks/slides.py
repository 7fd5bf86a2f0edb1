"""Slide pipeline throughput: ``tile_slides`` + ``embed_tiles`` against a bare OpenSlide + model loop.

Pipeline (what ``medvl slides tile`` and ``medvl slides embed`` do): open each slide, thumbnail,
Otsu tissue mask, grid, write the tiles file; then read every patch through OpenSlide in
``--workers`` reader threads, normalise, encode in batches with the model front door's medvl
model, write the feature bag (through the resumable partial file, made durable every 5 s).

Baseline (the same work with nothing around it): for the same patch coordinates, in one loop,
``openslide.OpenSlide.read_region`` → RGB array, stack a batch, normalise, and call the same
model's vision tower under ``torch.no_grad``; no tissue detection, no files, no threads.

Both use the same slides, coordinates, batch size, model and torch thread count, each timed as
the best of ``--repeat`` runs taken alternately. Reported: patches/s of both, the wall-time ratio
pipeline/baseline (target ≤ 1.2), the same for the embedding alone (tiling is a fixed cost per
slide, large on these small slides), and the ratio of their CPU times (all threads), which depends
less on what else the machine runs.

    .venv/bin/python -m benchmarks.slides                       # ~45 s here
    .venv/bin/python -m benchmarks.slides --slides 2 --size 6144   # 3.4x the patches per slide, ~2 min
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import best_of
from medvl.slides.embed import EmbedOptions, embed_tiles, load_patch_encoder
from medvl.slides.synthetic import (
    SyntheticSlideConfig,
    render_slide,
    write_patch_encoder,
    write_pyramidal_tiff,
)
from medvl.slides.tiling import TilingSpec, read_tiles, tile_slides


def bare_loop(tiles_dir: Path, model: torch.nn.Module, batch: int) -> int:
    """Read every tiled patch with OpenSlide in a plain loop and encode it; returns the patch count."""
    import openslide

    count = 0
    for path in sorted(tiles_dir.glob("*.tiles.parquet")):
        tiles = read_tiles(path)
        slide = openslide.OpenSlide(tiles.slide_path)
        level, size = int(tiles.meta["read_level"]), int(tiles.meta["read_size"])
        for lo in range(0, len(tiles.coords), batch):
            patches = np.stack([np.asarray(slide.read_region((int(x), int(y)), level, (size, size)).convert("RGB"))
                                for x, y in tiles.coords[lo:lo + batch]])
            pixels = (torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
            with torch.no_grad():
                model(pixels)
            count += len(patches)
        slide.close()
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slides", type=int, default=4)
    ap.add_argument("--size", type=int, default=3072, help="level-0 width in pixels (height = 2/3 of it)")
    ap.add_argument("--patch", type=int, default=64, help="patch side at the target resolution")
    ap.add_argument("--mpp", type=float, default=0.5, help="target µm/px (the slides are 0.5 µm/px at level 0)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = SyntheticSlideConfig(width=args.size, height=args.size * 2 // 3)
        (root / "slides").mkdir()
        for i in range(args.slides):
            image, _ = render_slide(i % 6, seed=i, config=cfg)
            write_pyramidal_tiff(root / "slides" / f"s{i}.tif", image, cfg.mpp, cfg.levels, cfg.tile)
        write_patch_encoder(root / "encoder", 0, SyntheticSlideConfig())
        encoder = load_patch_encoder(root / "encoder")
        spec = TilingSpec(patch_size=args.patch, mpp=args.mpp, tissue_threshold=0.25)
        options = EmbedOptions(batch_size=args.batch, workers=args.workers, backend="openslide")

        def pipeline() -> tuple[int, float, float]:
            """Tile then embed into fresh directories (nothing to skip); (patches, tiling s, embedding s)."""
            start = time.perf_counter()
            tile_slides([root / "slides"], root / "run" / "tiles", spec, backend="openslide")
            tiled = time.perf_counter()
            summary = embed_tiles(root / "run" / "tiles", encoder, root / "run" / "features", options)
            return int(summary["encoded"]), tiled - start, time.perf_counter() - tiled

        vision = encoder.model.vision.eval()
        best = dict.fromkeys(("pipe", "tile", "embed", "bare", "pipe_cpu", "bare_cpu"), float("inf"))
        for _ in range(args.repeat):  # alternate, so both see the same machine load
            shutil.rmtree(root / "run", ignore_errors=True)  # removing the last run's files is not timed
            cpu = time.process_time()
            seconds, (n, tile_s, embed_s) = best_of(pipeline, 1)
            for key, value in (("pipe", seconds), ("tile", tile_s), ("embed", embed_s),
                               ("pipe_cpu", time.process_time() - cpu)):
                best[key] = min(best[key], value)
            cpu = time.process_time()
            seconds, n_bare = best_of(lambda: bare_loop(root / "run" / "tiles", vision, args.batch), 1)
            best["bare"], best["bare_cpu"] = min(best["bare"], seconds), min(best["bare_cpu"], time.process_time() - cpu)
    assert n == n_bare, (n, n_bare)
    pipe_s, bare_s = best["pipe"], best["bare"]
    print(f"{args.slides} slides, {n} patches of {args.patch} px at {args.mpp} µm/px, batch {args.batch}, "
          f"{args.workers} reader threads, {args.threads} torch threads; best of {args.repeat} alternated runs")
    print(f"pipeline (tile + embed): {pipe_s:.2f} s  ({n / pipe_s:.0f} patches/s; tiling {best['tile']:.2f} s, "
          f"embedding {best['embed']:.2f} s)")
    print(f"bare OpenSlide + model loop: {bare_s:.2f} s  ({n / bare_s:.0f} patches/s)")
    print(f"ratio pipeline / bare loop: {pipe_s / bare_s:.2f}  (target <= 1.2)")
    print(f"ratio embedding alone / bare loop: {best['embed'] / bare_s:.2f}  "
          f"(tiling is a fixed cost per slide: {best['tile'] / args.slides * 1e3:.0f} ms for thumbnail, mask, files)")
    print(f"CPU time (all threads): pipeline {best['pipe_cpu']:.2f} s, bare loop {best['bare_cpu']:.2f} s, "
          f"ratio {best['pipe_cpu'] / best['bare_cpu']:.2f} (the work added)")


if __name__ == "__main__":
    main()
