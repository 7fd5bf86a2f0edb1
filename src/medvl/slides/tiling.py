"""Tiling a slide: tissue regions on a grid at a requested resolution, patch coordinates per region.

Resolution: ``mpp`` (microns per pixel) or ``magnification`` (objective power). The target
downsample from level 0 is ``mpp / slide_mpp``, or ``base_magnification / magnification`` where
the base is the slide's objective power (or, without one, ``10 / slide_mpp``, the usual 40× ≈
0.25 µm/px convention). Patches are read from the deepest level whose downsample does not exceed
the target (``read_size`` pixels there) and resized to ``patch_size`` when the level does not match
exactly.

Grid: square **regions** of ``region_size`` pixels at the target resolution (``patch_size`` by
default: one patch per region, a flat bag; HIPT: 4096 px regions of 256 px patches at 0.5 µm/px;
the Balancing Act: 2048 px regions) tile level 0 from the top-left corner; only regions entirely
inside the slide are considered. A region is kept when the fraction of its area that the
thumbnail tissue mask (:mod:`medvl.slides.tissue`) marks is at least ``tissue_threshold``. Every
patch of a kept region is listed, in row-major order inside the region (token ``t = row·R +
col``), which is the order the hierarchical slide encoder expects.

Output per slide (``<out>/<slide_id>.tiles.parquet``): one row per patch — ``slide_id``,
``region``, ``token``, ``x``, ``y`` (level-0 pixels of the patch's top-left corner) and the
region's ``tissue`` fraction — with the tiling parameters as JSON in the Parquet metadata
(``medvl_tiling``), plus ``<slide_id>.tissue.jpg`` (thumbnail, mask greyed, kept regions tinted) for a look.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medvl.slides.reader import SlideReader, SlideReadError, open_slide, slide_id_of
from medvl.slides.tissue import tissue_mask
from medvl.utils.errors import UserInputError

__all__ = [
    "SLIDE_EXTENSIONS",
    "TILES_SUFFIX",
    "SlideTiles",
    "TilingError",
    "TilingSpec",
    "find_slides",
    "plan_tiles",
    "read_tiles",
    "target_downsample",
    "tile_slides",
    "write_tiles",
]

SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
TILES_SUFFIX = ".tiles.parquet"
METADATA_KEY = b"medvl_tiling"


class TilingError(UserInputError, ValueError):
    """Tiling options that do not fit a slide (no resolution, finer than level 0, …); names the file."""


@dataclass(frozen=True)
class TilingSpec:
    """How to tile (see the module docstring); sizes in pixels at the target resolution."""

    patch_size: int = 256
    region_size: int | None = None
    mpp: float | None = None
    magnification: float | None = None
    base_magnification: float | None = None
    slide_mpp: float | None = None
    tissue_threshold: float = 0.25
    thumbnail_size: int = 768

    def __post_init__(self) -> None:
        if (self.mpp is None) == (self.magnification is None):
            raise TilingError("give exactly one of mpp (µm/px) or magnification")
        for name in ("mpp", "magnification", "base_magnification", "slide_mpp"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise TilingError(f"{name} must be > 0, got {value}")
        if self.patch_size < 1:
            raise TilingError(f"patch_size must be >= 1, got {self.patch_size}")
        if self.region_size is not None and (self.region_size < self.patch_size or self.region_size % self.patch_size):
            raise TilingError(f"region_size {self.region_size} must be a multiple of patch_size {self.patch_size}")
        if not 0.0 <= self.tissue_threshold <= 1.0:
            raise TilingError(f"tissue_threshold must lie in [0, 1], got {self.tissue_threshold}")

    @property
    def region(self) -> int:
        return self.region_size or self.patch_size

    @property
    def grid(self) -> int:
        """Patches per region side (R); a region has R² tokens."""
        return self.region // self.patch_size


def target_downsample(slide: SlideReader, spec: TilingSpec) -> float:
    """Downsample from level 0 to the target resolution (see the module docstring)."""
    if spec.mpp is not None:
        if slide.mpp is None:
            raise TilingError(f"{slide.path}: the slide has no resolution metadata (µm/px); pass --slide-mpp, "
                              "or tile by --magnification with --base-magnification")
        ds = spec.mpp / slide.mpp
    else:
        assert spec.magnification is not None
        base = spec.base_magnification or slide.objective_power or (10.0 / slide.mpp if slide.mpp else None)
        if base is None:
            raise TilingError(f"{slide.path}: the slide has no objective power or resolution; pass "
                              "--base-magnification or --slide-mpp")
        ds = base / spec.magnification
    if ds < 1.0 - 1e-6:
        raise TilingError(f"{slide.path}: the requested resolution is finer than level 0 (downsample {ds:.3g})")
    return ds


@dataclass
class SlideTiles:
    """The tiling of one slide: patch coordinates and how to read them."""

    slide_id: str
    slide_path: str
    coords: np.ndarray
    """(n_patches, 2) int64 level-0 (x, y) of each patch's top-left corner, region-major."""
    region: np.ndarray
    """(n_patches,) int64 region index of each patch."""
    token: np.ndarray
    """(n_patches,) int64 position inside the region (row-major)."""
    tissue: np.ndarray
    """(n_patches,) float32 tissue fraction of the patch's region."""
    meta: dict[str, Any]

    @property
    def n_regions(self) -> int:
        return int(self.meta["n_regions"])

    @property
    def tokens_per_region(self) -> int:
        return int(self.meta["tokens_per_region"])


def _fraction_in_boxes(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Fraction of True pixels of ``mask`` inside each [x0, y0, x1, y1) box (integer mask coordinates).

    A summed-area table, evaluated only at the rows and columns where boxes start or end (a grid's
    edges): one pass over the mask instead of two full cumulative sums; exact integer counts.
    """
    x0, y0, x1, y1 = (np.clip(boxes[:, i], 0, mask.shape[1 - i % 2]) for i in range(4))
    x1 = np.maximum(x1, x0 + 1).clip(max=mask.shape[1])
    y1 = np.maximum(y1, y0 + 1).clip(max=mask.shape[0])
    ys, xs = np.unique(np.concatenate([y0, y1])), np.unique(np.concatenate([x0, x1]))
    table = _prefix_sums(_prefix_sums(mask, ys, axis=0), xs, axis=1)  # counts in mask[:ys[i], :xs[j]]
    iy0, iy1, ix0, ix1 = np.searchsorted(ys, y0), np.searchsorted(ys, y1), np.searchsorted(xs, x0), np.searchsorted(xs, x1)
    inside = table[iy1, ix1] - table[iy0, ix1] - table[iy1, ix0] + table[iy0, ix0]
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    return inside / area


def _prefix_sums(values: np.ndarray, cuts: np.ndarray, axis: int) -> np.ndarray:
    """``values[:c].sum(axis)`` (int64) for each sorted, unique cut ``c`` in [0, n] along ``axis``, stacked."""
    n = values.shape[axis]
    inner = cuts[(cuts > 0) & (cuts < n)]
    bands = np.add.reduceat(values, np.concatenate([[0], inner]), axis=axis, dtype=np.int64)
    zero = np.zeros_like(np.take(bands, [0], axis=axis))
    prefix = np.concatenate([zero, np.cumsum(bands, axis=axis)], axis=axis)  # at 0, inner…, n
    return np.take(prefix, np.searchsorted(np.concatenate([[0], inner, [n]]), cuts), axis=axis)


def plan_tiles(slide: SlideReader, spec: TilingSpec) -> tuple[SlideTiles, np.ndarray, np.ndarray]:
    """The tiling of ``slide`` and, for inspection, its thumbnail and tissue mask."""
    ds = target_downsample(slide, spec)
    w0, h0 = slide.dimensions
    footprint = spec.region * ds  # region side in level-0 pixels
    nx, ny = int(w0 // footprint), int(h0 // footprint)
    thumb, thumb_ds = slide.thumbnail(spec.thumbnail_size)
    mask = tissue_mask(thumb)
    level = slide.best_level_for_downsample(ds)
    level_ds = slide.level_downsamples[level]
    read_size = max(1, round(spec.patch_size * ds / level_ds))
    gx, gy = np.meshgrid(np.arange(nx), np.arange(ny))
    origins = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float64) * footprint  # row-major regions
    if len(origins):
        scale_x = mask.shape[1] / w0
        scale_y = mask.shape[0] / h0
        boxes = np.stack([np.floor(origins[:, 0] * scale_x), np.floor(origins[:, 1] * scale_y),
                          np.ceil((origins[:, 0] + footprint) * scale_x),
                          np.ceil((origins[:, 1] + footprint) * scale_y)], axis=1).astype(np.int64)
        fraction = _fraction_in_boxes(mask, boxes)
    else:
        fraction = np.zeros(0)
    keep = np.flatnonzero(fraction >= max(spec.tissue_threshold, 1e-12))
    r = spec.grid
    step = spec.patch_size * ds
    tj, ti = np.meshgrid(np.arange(r), np.arange(r))  # token t = i·R + j (row-major)
    offsets = np.stack([tj.ravel(), ti.ravel()], axis=1) * step
    coords = (origins[keep][:, None, :] + offsets[None, :, :]).reshape(-1, 2)
    n = len(keep)
    meta = {
        "slide_id": slide.slide_id,
        "backend": slide.backend,
        "slide_dimensions": [w0, h0],
        "slide_mpp": slide.mpp,
        "objective_power": slide.objective_power,
        "target_mpp": spec.mpp if spec.mpp is not None else (slide.mpp * ds if slide.mpp else None),
        "magnification": spec.magnification,
        "target_downsample": ds,
        "patch_size": spec.patch_size,
        "region_size": spec.region,
        "tokens_per_region": r * r,
        "read_level": level,
        "level_downsample": level_ds,
        "read_size": read_size,
        "tissue_threshold": spec.tissue_threshold,
        "n_regions": n,
        "n_patches": n * r * r,
        "grid_regions": [nx, ny],
        "thumbnail_downsample": thumb_ds,
    }
    tiles = SlideTiles(
        slide_id=slide.slide_id,
        slide_path=str(slide.path),
        coords=np.rint(coords).astype(np.int64),
        region=np.repeat(np.arange(n, dtype=np.int64), r * r),
        token=np.tile(np.arange(r * r, dtype=np.int64), n),
        tissue=np.repeat(fraction[keep].astype(np.float32), r * r),
        meta=meta,
    )
    return tiles, thumb, mask


def write_tiles(tiles: SlideTiles, out_dir: Path, thumb: np.ndarray | None = None,
                mask: np.ndarray | None = None) -> Path:
    """Write ``<slide_id>.tiles.parquet`` (atomically) and, given the thumbnail, the QC JPEG."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(Path(tiles.slide_path).resolve(), out_dir.resolve())
    meta = {**tiles.meta, "slide_path": rel}
    table = pa.table({
        "slide_id": pa.array([tiles.slide_id] * len(tiles.coords), type=pa.string()),
        "region": tiles.region, "token": tiles.token,
        "x": tiles.coords[:, 0], "y": tiles.coords[:, 1], "tissue": tiles.tissue,
    })
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    target = out_dir / f"{tiles.slide_id}{TILES_SUFFIX}"
    tmp = target.with_name(f".{target.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, target)
    if thumb is not None and mask is not None:
        _write_preview(out_dir / f"{tiles.slide_id}.tissue.jpg", thumb, mask, tiles)
    return target


def _write_preview(path: Path, thumb: np.ndarray, mask: np.ndarray, tiles: SlideTiles, size: int = 384) -> None:
    """A JPEG (longer side ≤ ``size``): the thumbnail, non-tissue greyed out, kept regions tinted green."""
    from PIL import Image

    step = max(1, int(np.ceil(max(thumb.shape[:2]) / size)))
    image = thumb[::step, ::step].astype(np.int16)
    # grey out what is not tissue (np.where over the small image: cheaper than boolean indexing)
    image = np.where(mask[::step, ::step, None], image, image // 2 + 127)
    footprint = tiles.meta["region_size"] * tiles.meta["target_downsample"]  # level-0 pixels
    nx, ny = tiles.meta["grid_regions"]
    kept = np.zeros((max(ny, 1), max(nx, 1)), dtype=bool)
    corners = tiles.coords[:: tiles.tokens_per_region]
    # corners are rounded multiples of the (possibly fractional) footprint: round, don't floor
    kept[np.rint(corners[:, 1] / footprint).astype(int).clip(0, max(ny, 1) - 1),
         np.rint(corners[:, 0] / footprint).astype(int).clip(0, max(nx, 1) - 1)] = True
    w0, h0 = tiles.meta["slide_dimensions"]
    rows = ((np.arange(image.shape[0]) + 0.5) * step * h0 / thumb.shape[0] // footprint).astype(int)
    cols = ((np.arange(image.shape[1]) + 0.5) * step * w0 / thumb.shape[1] // footprint).astype(int)
    inside = (rows < ny)[:, None] & (cols < nx)[None, :]
    tinted = kept[rows.clip(0, max(ny, 1) - 1)][:, cols.clip(0, max(nx, 1) - 1)] & inside
    image[tinted] = (image[tinted] * 0.7 + np.array([0, 255, 0]) * 0.3).astype(np.int16)
    tmp = path.with_name(f".{path.name}.tmp.jpg")
    Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(tmp, quality=85)
    os.replace(tmp, path)


def read_tiles(path: str | os.PathLike[str]) -> SlideTiles:
    """Read a ``<slide_id>.tiles.parquet`` file; ``slide_path`` is resolved against its directory."""
    import pyarrow.parquet as pq

    file = Path(path)
    try:
        table = pq.read_table(file)
        raw = (table.schema.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise ValueError("no medvl_tiling metadata")
        meta = json.loads(raw)
    except Exception as exc:
        raise TilingError(f"{file}: not a medvl tiles file ({type(exc).__name__}: {exc})") from None
    columns = {name: table.column(name).to_numpy() for name in ("region", "token", "x", "y", "tissue")}
    slide_path = (file.parent / meta["slide_path"]).resolve()
    return SlideTiles(slide_id=str(meta["slide_id"]), slide_path=str(slide_path),
                      coords=np.stack([columns["x"], columns["y"]], axis=1).astype(np.int64),
                      region=columns["region"].astype(np.int64), token=columns["token"].astype(np.int64),
                      tissue=columns["tissue"].astype(np.float32), meta=meta)


def find_slides(inputs: list[Path]) -> list[Path]:
    """Slide files among ``inputs`` (files as given; directories searched for slide extensions, sorted)."""
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found.extend(sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_EXTENSIONS))
        elif item.is_file():
            found.append(item)
        else:
            raise SlideReadError(f"{item}: no such slide file or directory")
    ids = [slide_id_of(p) for p in found]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise TilingError(f"several slide files share the slide id(s) {dupes[:5]}; ids are file names without extension")
    return found


def tile_slides(
    inputs: list[Path],
    out_dir: Path,
    spec: TilingSpec,
    *,
    backend: str = "auto",
    overwrite: bool = False,
    log: Any = None,
) -> dict[str, Any]:
    """Tile every slide of ``inputs`` into ``out_dir``; returns the summary also written as ``tiling.json``.

    Every slide is opened and checked (resolution, downsample) before anything is written. Slides
    whose tiles file already exists are skipped unless ``overwrite`` (a rerun completes a killed run).
    """
    from medvl import __version__
    from medvl.utils.io import atomic_write_json

    slides = find_slides(inputs)
    if not slides:
        raise SlideReadError(f"no slide files ({', '.join(SLIDE_EXTENSIONS)}) in {[str(p) for p in inputs]}")
    for path in slides:  # validate before writing
        with open_slide(path, backend=backend, mpp=spec.slide_mpp) as slide:  # type: ignore[arg-type]
            target_downsample(slide, spec)
    summary: dict[str, Any] = {"medvl_version": __version__, "spec": asdict(spec), "backend": backend, "slides": {}}
    for path in slides:
        sid = slide_id_of(path)
        target = out_dir / f"{sid}{TILES_SUFFIX}"
        if target.is_file() and not overwrite:
            tiles = read_tiles(target)
            if tiles.meta.get("patch_size") != spec.patch_size or tiles.meta.get("region_size") != spec.region:
                raise TilingError(f"{target} was tiled with other settings; pass --overwrite to tile again")
        else:
            with open_slide(path, backend=backend, mpp=spec.slide_mpp) as slide:  # type: ignore[arg-type]
                tiles, thumb, mask = plan_tiles(slide, spec)
            write_tiles(tiles, out_dir, thumb, mask)
        summary["slides"][sid] = {"file": target.name, "n_regions": tiles.n_regions,
                                  "n_patches": len(tiles.coords), "backend": tiles.meta["backend"]}
        if log is not None:
            log(f"{sid}: {tiles.n_regions} regions, {len(tiles.coords)} patches")
    atomic_write_json(out_dir / "tiling.json", summary)
    return summary
