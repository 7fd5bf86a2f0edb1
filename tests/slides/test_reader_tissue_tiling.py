"""Reading generated pyramidal TIFFs (OpenSlide and tifffile), Otsu tissue masks, tiling at a resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medvl.cli.main import build_app
from medvl.slides.reader import SlideReadError, open_slide
from medvl.slides.tiling import TilingError, TilingSpec, plan_tiles, read_tiles, tile_slides
from medvl.slides.tissue import otsu_threshold, tissue_mask

openslide = pytest.importorskip("openslide")


def test_openslide_reads_the_generated_pyramid_with_its_resolution(small_slides: tuple[Path, dict]) -> None:
    root, _ = small_slides
    with open_slide(root / "case0.tif", backend="openslide") as slide:
        assert slide.backend == "openslide" and slide.vendor == "generic-tiff"
        assert slide.mpp == pytest.approx(0.5)
        assert slide.level_dimensions == [(768, 512), (384, 256), (192, 128)]
        assert slide.level_downsamples == pytest.approx([1.0, 2.0, 4.0])
        with open_slide(root / "case0.tif", backend="tifffile") as fallback:
            assert fallback.mpp == pytest.approx(0.5) and fallback.level_dimensions == slide.level_dimensions
            # the same pixels through both backends, across tile borders and past the slide's edge
            for location, level, size in [((100, 90), 0, (200, 60)), ((120, 250), 1, (70, 70)), ((700, 480), 0, (100, 50))]:
                np.testing.assert_array_equal(slide.read_region(location, level, size),
                                              fallback.read_region(location, level, size))
    with pytest.raises(SlideReadError, match=r"not found"):
        open_slide(root / "missing.tif")


def test_otsu_threshold_maximises_the_between_class_variance() -> None:
    rng = np.random.default_rng(0)
    values = np.clip(np.concatenate([rng.normal(0.1, 0.03, 5000), rng.normal(0.6, 0.1, 2000)]), 0, 1)
    t = otsu_threshold(values)
    best, best_t = -1.0, None
    for edge in np.linspace(0, 1, 257)[1:-1]:  # the definition, by brute force on the same bins
        low, high = values[values <= edge], values[values > edge]
        if len(low) and len(high):
            score = len(low) * len(high) * (low.mean() - high.mean()) ** 2
            if score > best:
                best, best_t = score, edge
    assert best_t is not None and abs(t - best_t) <= 1 / 256 + 1e-9
    assert 0.2 < t < 0.45


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_fast_opening_and_hole_filling_equal_scipy_morphology(size: int) -> None:
    from scipy import ndimage

    from medvl.slides.tissue import _fill_holes, _opening

    rng = np.random.default_rng(size)
    for p in (0.2, 0.5, 0.8, 0.95):
        for shape in ((67, 91), (3, 4), (1, 7)):  # windows wider than the image too
            mask = rng.random(shape) > p
            np.testing.assert_array_equal(_opening(mask, size),
                                          ndimage.binary_opening(mask, structure=np.ones((size, size), bool)))
            np.testing.assert_array_equal(_fill_holes(mask), ndimage.binary_fill_holes(mask))
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7], ring[4, 4] = True, False  # a one-pixel hole
    assert _fill_holes(ring)[4, 4] and not _fill_holes(np.zeros((5, 5), bool)).any()


def test_tissue_fraction_in_boxes_counts_exactly() -> None:
    from medvl.slides.tiling import _fraction_in_boxes

    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 40, 2)
        mask = rng.random((h, w)) > rng.random()
        corners = np.sort(rng.integers(-3, max(h, w) + 3, (int(rng.integers(1, 30)), 2, 2)), axis=1)
        boxes = corners.transpose(0, 2, 1).reshape(-1, 4)[:, [0, 2, 1, 3]]  # x0, y0, x1, y1 with x0 <= x1
        expected = []
        for x0, y0, x1, y1 in boxes:  # the definition: clipped to the mask, at least one pixel wide
            x0, y0 = min(max(x0, 0), w), min(max(y0, 0), h)
            x1, y1 = min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
            expected.append(mask[y0:y1, x0:x1].sum() / max((x1 - x0) * (y1 - y0), 1))
        np.testing.assert_array_equal(_fraction_in_boxes(mask, boxes), expected)


#: sha256 (16 hex) of the coordinates, regions, tokens (int64), tissue fractions (float32) and thumbnail mask
#: of the fixture slides' tilings, recorded with the tiling code before its session-3 speed-ups (scipy
#: minimum/maximum filters, full summed-area table, np.clip on int64 bins): faster code tiles the same.
_TILING_SPECS = {
    "p32": TilingSpec(patch_size=32, mpp=0.5, tissue_threshold=0.25),
    "p16_r64_mpp1.3": TilingSpec(patch_size=16, region_size=64, mpp=1.3, tissue_threshold=0.2),
    "mag5_thumb300": TilingSpec(patch_size=16, magnification=5, thumbnail_size=300, tissue_threshold=0.01),
}
_TILING_DIGESTS = {
    ("case0", "p32"): (90, "b0d73e5436d739e6"),
    ("case0", "p16_r64_mpp1.3"): (64, "edf80fda51e0b6a6"),
    ("case0", "mag5_thumb300"): (30, "42ba6d628d9b1950"),
    ("case1", "p32"): (123, "850f887375d7d363"),
    ("case1", "p16_r64_mpp1.3"): (96, "13ab99c734fcf63e"),
    ("case1", "mag5_thumb300"): (41, "2d6d8f77b90957fb"),
    ("case2", "p32"): (102, "3abcaf33bc56fbcf"),
    ("case2", "p16_r64_mpp1.3"): (96, "82789c09824a0d16"),
    ("case2", "mag5_thumb300"): (34, "4948bc5c436788ea"),
}


@pytest.mark.parametrize("case", ["case0", "case1", "case2"])
def test_tile_coordinates_of_the_generated_slides_are_pinned(small_slides: tuple[Path, dict], case: str) -> None:
    import hashlib

    root, _ = small_slides
    for name, spec in _TILING_SPECS.items():
        with open_slide(root / f"{case}.tif", backend="openslide") as slide:
            tiles, _, mask = plan_tiles(slide, spec)
        digest = hashlib.sha256()
        for array in (tiles.coords.astype("<i8"), tiles.region.astype("<i8"), tiles.token.astype("<i8"),
                      tiles.tissue.astype("<f4"), mask):
            digest.update(np.ascontiguousarray(array).tobytes())
        assert (len(tiles.coords), digest.hexdigest()[:16]) == _TILING_DIGESTS[case, name], name


def _truth_fraction(truth: np.ndarray, x: int, y: int, side: int) -> float:
    return float(truth[y:y + side, x:x + side].mean())


@pytest.mark.parametrize("case", ["case0", "case1", "case2"])
def test_tiling_finds_the_tissue_and_only_the_tissue(small_slides: tuple[Path, dict], case: str) -> None:
    root, truths = small_slides
    truth = truths[case]
    with open_slide(root / f"{case}.tif") as slide:
        thumb, _ = slide.thumbnail(512)
        mask = tissue_mask(thumb)
        rows = (np.arange(mask.shape[0]) + 0.5) * truth.shape[0] / mask.shape[0]
        cols = (np.arange(mask.shape[1]) + 0.5) * truth.shape[1] / mask.shape[1]
        small_truth = truth[rows.astype(int)][:, cols.astype(int)]
        assert (mask == small_truth).mean() > 0.98  # dust specks excluded, lumens filled
        spec = TilingSpec(patch_size=16, mpp=1.0, tissue_threshold=0.5)
        tiles, _, _ = plan_tiles(slide, spec)
    footprint = 32  # 16 px at 1 µm/px = 32 level-0 px
    kept = {(int(x), int(y)) for x, y in tiles.coords}
    assert kept, "no tissue found"
    for x in range(0, 768 - footprint + 1, footprint):
        for y in range(0, 512 - footprint + 1, footprint):
            fraction = _truth_fraction(truth, x, y, footprint)
            if abs(fraction - 0.5) < 0.15:
                continue  # at the threshold the thumbnail's resolution decides
            assert ((x, y) in kept) == (fraction > 0.5), (x, y, fraction)
    with open_slide(root / f"{case}.tif") as slide:  # a low threshold still takes no glass-only region
        loose, _, _ = plan_tiles(slide, TilingSpec(patch_size=16, mpp=1.0, tissue_threshold=0.01))
    assert all(_truth_fraction(truth, int(x), int(y), footprint) > 0 for x, y in loose.coords)


def test_grid_geometry_levels_and_region_tokens(small_slides: tuple[Path, dict]) -> None:
    root, _ = small_slides
    with open_slide(root / "case1.tif") as slide:
        tiles, _, _ = plan_tiles(slide, TilingSpec(patch_size=16, region_size=64, mpp=1.0, tissue_threshold=0.2))
        assert tiles.meta["read_level"] == 1 and tiles.meta["read_size"] == 16
        assert tiles.tokens_per_region == 16 and len(tiles.coords) == 16 * tiles.n_regions
        first = tiles.coords[:16]  # row-major tokens inside the first region, 32 level-0 px apart
        assert (first[1] - first[0]).tolist() == [32, 0] and (first[4] - first[0]).tolist() == [0, 32]
        assert tiles.region[:17].tolist() == [0] * 16 + [1] and tiles.token[:17].tolist() == [*range(16), 0]
        # 1.5 µm/px: read from level 1 (2 × 0.5 µm) 24 px and resize to 16
        odd, _, _ = plan_tiles(slide, TilingSpec(patch_size=16, mpp=1.5))
        assert odd.meta["read_level"] == 1 and odd.meta["read_size"] == 24
        # magnification without an objective power: 10 / mpp = 20× at level 0, so 5× = downsample 4
        mag, _, _ = plan_tiles(slide, TilingSpec(patch_size=16, magnification=5))
        assert mag.meta["target_downsample"] == pytest.approx(4.0) and mag.meta["read_level"] == 2
        with pytest.raises(TilingError, match=r"finer than level 0"):
            plan_tiles(slide, TilingSpec(patch_size=16, mpp=0.25))
    with pytest.raises(TilingError, match=r"multiple of patch_size"):
        TilingSpec(patch_size=16, region_size=40, mpp=1.0)
    with pytest.raises(TilingError, match=r"exactly one of mpp"):
        TilingSpec(patch_size=16)


def test_slide_without_resolution_needs_slide_mpp(tmp_path: Path) -> None:
    import tifffile

    image = np.full((256, 256, 3), 240, dtype=np.uint8)
    image[64:192, 64:192] = (200, 120, 180)
    tifffile.imwrite(tmp_path / "bare.tif", image, tile=(128, 128), photometric="rgb")
    with pytest.raises(TilingError, match=r"bare.tif: the slide has no resolution metadata.*--slide-mpp"):
        tile_slides([tmp_path / "bare.tif"], tmp_path / "tiles", TilingSpec(patch_size=16, mpp=1.0))
    assert not (tmp_path / "tiles").exists()  # checked before anything was written
    summary = tile_slides([tmp_path / "bare.tif"], tmp_path / "tiles", TilingSpec(patch_size=16, mpp=1.0, slide_mpp=0.5))
    assert summary["slides"]["bare"]["n_regions"] == 16  # the 128 px square = 4 × 4 patches of 32 px


def test_tile_command_through_openslide(small_slides: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = small_slides
    out = tmp_path / "tiles"
    result = CliRunner().invoke(build_app(), ["slides", "tile", str(root), "--out", str(out), "--mpp", "1.0",
                                              "--patch-size", "16", "--region-size", "32"])
    assert result.exit_code == 0, result.output
    assert "tiled 3 slides" in result.output
    for case in ("case0", "case1", "case2"):
        tiles = read_tiles(out / f"{case}.tiles.parquet")
        assert tiles.meta["backend"] == "openslide" and tiles.slide_id == case
        assert Path(tiles.slide_path) == (root / f"{case}.tif").resolve()
        assert (out / f"{case}.tissue.jpg").is_file()
    # a rerun keeps what is there; other settings without --overwrite are refused
    again = CliRunner().invoke(build_app(), ["slides", "tile", str(root), "--out", str(out), "--mpp", "1.0",
                                             "--patch-size", "8"])
    assert again.exit_code == 2 and "other settings" in again.output  # a user error: exit 2, no traceback


def test_jpeg_tiles_read_alike_through_openslide_and_the_tifffile_fallback(tmp_path: Path) -> None:
    import tifffile

    from medvl.slides.synthetic import SyntheticSlideConfig, render_slide

    image, _ = render_slide(4, seed=2, config=SyntheticSlideConfig(width=512, height=384))
    with tifffile.TiffWriter(tmp_path / "jpeg.tif") as writer:  # JPEG tiles with shared tables, as scanners write
        writer.write(image, tile=(128, 128), photometric="rgb", compression="jpeg", resolution=(2e4, 2e4),
                     resolutionunit="CENTIMETER")
    with open_slide(tmp_path / "jpeg.tif", backend="openslide") as a, \
            open_slide(tmp_path / "jpeg.tif", backend="tifffile") as b:
        ra, rb = a.read_region((100, 50), 0, (200, 150)), b.read_region((100, 50), 0, (200, 150))
    assert np.abs(ra.astype(int) - rb.astype(int)).mean() < 2.0  # two JPEG decoders, same pixels up to rounding
    assert np.abs(ra.astype(int) - image[50:200, 100:300].astype(int)).mean() < 6.0
