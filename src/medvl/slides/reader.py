"""Reading whole-slide images: OpenSlide first, tifffile as the fallback for pyramidal TIFFs.

:func:`open_slide` returns a :class:`SlideReader` with the pyramid geometry (level sizes and
downsamples, level-0 microns per pixel, objective power) and ``read_region(location, level,
size)`` → RGB ``uint8`` (h, w, 3), where ``location`` is in level-0 pixels as in OpenSlide.
Pixels OpenSlide reports as transparent (no data) are composited onto white, as OpenSlide's own
thumbnails do.

Backends:

* ``openslide`` (``openslide-python`` + the ``openslide-bin`` wheel, extra ``slides``): every
  format OpenSlide reads (Aperio SVS, Hamamatsu, MIRAX, generic tiled TIFF, DICOM, …);
* ``tifffile``: tiled pyramidal TIFF/SVS/OME-TIFF through tifffile, reading only the tiles a region
  touches (stripped pages are read whole once and kept). JPEG/JPEG-2000 tiles need
  ``imagecodecs`` (in the extra).

Resolution: OpenSlide's ``openslide.mpp-x``; for tifffile the Aperio ``MPP =`` description field,
else the XResolution tag with a centimetre/inch ResolutionUnit. ``mpp=`` overrides both (a slide
without resolution metadata needs it, or tiling by magnification with ``base_magnification``).
"""

from __future__ import annotations

import math
import os
import re
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medvl.utils.errors import UserInputError

__all__ = [
    "OpenSlideReader",
    "SlideReadError",
    "SlideReader",
    "TiffFileReader",
    "open_slide",
    "openslide_available",
    "slide_id_of",
]

Backend = Literal["auto", "openslide", "tifffile"]


class SlideReadError(UserInputError, ValueError):
    """A slide that cannot be opened or read; names the file."""


def openslide_available() -> bool:
    """Whether ``openslide-python`` and an OpenSlide library can be imported."""
    try:
        import openslide  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


class SlideReader(ABC):
    """A pyramidal slide. Level 0 is the full resolution; sizes are ``(width, height)``."""

    path: Path
    backend: str
    level_dimensions: list[tuple[int, int]]
    level_downsamples: list[float]
    mpp: float | None
    """Microns per pixel at level 0 (None when the file does not say)."""
    objective_power: float | None

    @property
    def slide_id(self) -> str:
        """The file name without its extension (``.ome.tif(f)`` counted as one)."""
        return slide_id_of(self.path)

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    def best_level_for_downsample(self, downsample: float) -> int:
        """The deepest level whose downsample does not exceed ``downsample`` (1 % tolerance)."""
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if ds <= downsample * 1.01:
                best = level
        return best

    @abstractmethod
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 (h, w, 3) of ``size`` pixels at ``level`` whose top-left is ``location`` (level 0)."""

    def thumbnail(self, max_size: int) -> tuple[np.ndarray, float]:
        """An RGB thumbnail whose longer side is at most ``max_size``, and its downsample from level 0."""
        w0, h0 = self.dimensions
        target = max(w0, h0) / max_size
        level = self.best_level_for_downsample(max(target, 1.0))
        lw, lh = self.level_dimensions[level]
        image = self.read_region((0, 0), level, (lw, lh))
        factor = max(lw, lh) / max_size
        if factor > 1:
            from PIL import Image

            size = (max(1, round(lw / factor)), max(1, round(lh / factor)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
        return image, w0 / image.shape[1]

    def close(self) -> None:  # noqa: B027 - optional for subclasses
        """Release the file."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _composite_white(rgba: np.ndarray) -> np.ndarray:
    """Premultiplied-alpha RGBA (OpenSlide) over white → RGB uint8."""
    if rgba.shape[-1] == 3 or int(rgba[..., 3].min()) == 255:  # opaque: the usual case, no copy
        return rgba[..., :3]
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16) + (255 - alpha)
    return np.minimum(rgb, 255).astype(np.uint8)


class OpenSlideReader(SlideReader):
    """Slides through OpenSlide."""

    backend = "openslide"

    def __init__(self, path: str | os.PathLike[str], mpp: float | None = None) -> None:
        import openslide

        self.path = Path(path)
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError) as exc:
            raise SlideReadError(f"{self.path}: OpenSlide cannot open it ({exc})") from None
        self.level_dimensions = [tuple(map(int, d)) for d in self._slide.level_dimensions]  # type: ignore[misc]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        props = self._slide.properties
        self.mpp = mpp if mpp is not None else _float(props.get("openslide.mpp-x"))
        self.objective_power = _float(props.get("openslide.objective-power"))
        self.vendor = props.get("openslide.vendor")

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        import openslide

        try:
            region = self._slide.read_region((int(location[0]), int(location[1])), int(level),
                                             (int(size[0]), int(size[1])))
        except openslide.OpenSlideError as exc:
            raise SlideReadError(f"{self.path}: cannot read region {location} level {level} ({exc})") from None
        return _composite_white(np.asarray(region))

    def close(self) -> None:
        self._slide.close()


_APERIO_MPP = re.compile(r"MPP\s*=\s*([0-9.eE+-]+)")
_APERIO_MAG = re.compile(r"AppMag\s*=\s*([0-9.eE+-]+)")


class TiffFileReader(SlideReader):
    """Tiled pyramidal TIFFs through tifffile, decoding only the tiles a region needs.

    Thread-safe: file reads are serialised by a lock, decoding runs in parallel.
    """

    backend = "tifffile"

    def __init__(self, path: str | os.PathLike[str], mpp: float | None = None) -> None:
        import tifffile

        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(str(self.path))
            series = self._tif.series[0]
            pages = [level.keyframe for level in series.levels]
        except Exception as exc:  # tifffile raises many types for non-TIFF or corrupt input
            raise SlideReadError(f"{self.path}: tifffile cannot read it ({type(exc).__name__}: {exc})") from None
        self._pages = pages
        self._lock = threading.Lock()
        self._whole: dict[int, np.ndarray] = {}
        dims = []
        for page in pages:
            shape = page.shape
            if len(shape) != 3 or shape[-1] not in (3, 4):
                raise SlideReadError(f"{self.path}: page of shape {shape} is not an RGB(A) image")
            dims.append((int(shape[1]), int(shape[0])))
        self.level_dimensions = dims
        self.level_downsamples = [dims[0][0] / d[0] for d in dims]
        description = str(getattr(pages[0], "description", "") or "")
        self.mpp = mpp if mpp is not None else self._resolution_mpp(pages[0], description)
        mag = _APERIO_MAG.search(description)
        self.objective_power = float(mag.group(1)) if mag else None

    @staticmethod
    def _resolution_mpp(page: Any, description: str) -> float | None:
        aperio = _APERIO_MPP.search(description)
        if aperio:
            return float(aperio.group(1))
        tag = page.tags.get("XResolution")
        unit = page.tags.get("ResolutionUnit")
        if tag is None or unit is None:
            return None
        num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
        per_unit = num / den if den else 0.0
        unit_value = int(getattr(unit.value, "value", unit.value))
        microns = {3: 1e4, 2: 25400.0}.get(unit_value)  # CENTIMETER, INCH
        if microns is None or per_unit <= 0:
            return None
        return microns / per_unit

    def _level_array(self, level: int) -> np.ndarray:
        if level not in self._whole:
            with self._lock:
                self._whole[level] = self._pages[level].asarray()
        return self._whole[level]

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        if not 0 <= level < self.level_count:
            raise SlideReadError(f"{self.path}: level {level} out of range ({self.level_count} levels)")
        ds = self.level_downsamples[level]
        x0, y0 = math.floor(location[0] / ds), math.floor(location[1] / ds)
        w, h = int(size[0]), int(size[1])
        lw, lh = self.level_dimensions[level]
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        # the part of the request inside the level
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, lw), min(y0 + h, lh)
        if ix1 <= ix0 or iy1 <= iy0:
            return out
        page = self._pages[level]
        if not page.is_tiled:
            whole = self._level_array(level)
            out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = whole[iy0:iy1, ix0:ix1, :3]
            return out
        tw, th = page.tilewidth, page.tilelength
        across = math.ceil(lw / tw)
        for ty in range(iy0 // th, (iy1 - 1) // th + 1):
            for tx in range(ix0 // tw, (ix1 - 1) // tw + 1):
                tile = self._tile(page, ty * across + tx)
                # overlap of this tile with the request, in level coordinates
                ax0, ay0 = max(ix0, tx * tw), max(iy0, ty * th)
                ax1, ay1 = min(ix1, (tx + 1) * tw), min(iy1, (ty + 1) * th)
                out[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = tile[ay0 - ty * th:ay1 - ty * th,
                                                                   ax0 - tx * tw:ax1 - tx * tw, :3]
        return out

    def _tile(self, page: Any, index: int) -> np.ndarray:
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        if count == 0:
            return np.full((page.tilelength, page.tilewidth, 3), 255, dtype=np.uint8)
        with self._lock:
            handle = self._tif.filehandle
            handle.seek(offset)
            data = handle.read(count)
        try:
            segment, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        except Exception as exc:
            raise SlideReadError(f"{self.path}: cannot decode tile {index} ({type(exc).__name__}: {exc}); "
                                 "JPEG/JPEG-2000 tiles need the imagecodecs package") from None
        return np.asarray(segment)[0]

    def close(self) -> None:
        self._tif.close()


def slide_id_of(path: str | os.PathLike[str]) -> str:
    """The slide id of a file: its name without the extension (``.ome.tif(f)`` counted as one)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def open_slide(path: str | os.PathLike[str], backend: Backend = "auto", mpp: float | None = None) -> SlideReader:
    """Open ``path`` with OpenSlide (``auto`` when it is installed) or tifffile."""
    file = Path(path)
    if not file.is_file():
        raise SlideReadError(f"{file}: slide file not found")
    if backend not in ("auto", "openslide", "tifffile"):
        raise ValueError(f"unknown slide backend {backend!r}; use auto, openslide or tifffile")
    if backend == "openslide" or (backend == "auto" and openslide_available()):
        if backend == "openslide" and not openslide_available():
            raise SlideReadError("the openslide backend needs openslide-python and openslide-bin "
                                 "(pip install 'medvl[slides]')")
        try:
            return OpenSlideReader(file, mpp=mpp)
        except SlideReadError:
            if backend == "openslide":
                raise
    return TiffFileReader(file, mpp=mpp)
