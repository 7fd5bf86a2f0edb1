"""Loading images (PNG/JPEG/…, DICOM, ``.npy``) and feature bags into float tensors.

Images come back as ``FloatTensor (C, H, W)`` with values in ``[0, 1]`` and are kept in
floating point from the file's native bit depth onwards (16-bit PNG — grey, and 48/64-bit colour,
which Pillow would reduce to 8 bits and is therefore decoded with pypng — and DICOM values are
never quantised to 8 bits); mean/std normalisation happens later in the transforms.

DICOM: the modality LUT (RescaleSlope/RescaleIntercept, or a Modality LUT Sequence) is
applied first, then the VOI window (WindowCenter/WindowWidth with the VOILUTFunction of
PS3.3 C.11.2.1.2, or a VOI LUT Sequence); without either the rescaled values are min–max
scaled. MONOCHROME1 images (where high values are dark) are inverted so that, as for
MONOCHROME2, bright means dense.

Feature bags (whole-slide images as precomputed patch features) come back as
``FloatTensor (n_regions, d)`` or, for hierarchical encoders, as region tokens
``FloatTensor (n_regions, n_tokens, d)`` (see :func:`load_feature_bag`'s ``layout``).

Every error is an :class:`ImageLoadError` naming the record (when given) and the file — including
decoder failures that are not ``OSError`` (Pillow's ``DecompressionBombError`` for images beyond
``PIL.Image.MAX_IMAGE_PIXELS``, library-specific errors), so ``medvl data check`` names the record
and ``on_bad_sample: skip`` counts it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from medvl.utils.errors import UserInputError

__all__ = [
    "FEATURE_BAG_KEYS",
    "BagLayout",
    "ImageLoadError",
    "dicom_to_float",
    "load_array",
    "load_dicom",
    "load_feature_bag",
    "load_image",
    "load_pil",
    "load_record",
    "load_rgb8",
    "to_channels",
    "window_linear",
]

#: Keys tried, in order, when a feature-bag file holds several arrays (CLAM uses ``features``).
FEATURE_BAG_KEYS: tuple[str, ...] = ("features", "feats", "embeddings", "x")

WindowMode = Literal["header", "minmax"]


class ImageLoadError(UserInputError, ValueError):
    """An image or feature bag that cannot be loaded; names the record and the file."""

    def __init__(self, path: str | os.PathLike[str], reason: str, record_id: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.record_id = record_id
        where = f"record {record_id!r}: " if record_id is not None else ""
        super().__init__(f"{where}cannot load {self.path}: {reason}")


# ----------------------------------------------------------------------------------------- channels


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert ``(C, H, W)`` to ``channels`` (1 or 3) channels.

    1 → 3 repeats the grey channel; 3 → 1 uses ITU-R BT.601 luma weights; 4 (RGBA) drops alpha first.
    """
    if image.ndim != 3:
        raise ValueError(f"expected (C, H, W), got shape {tuple(image.shape)}")
    if image.shape[0] == 4:
        image = image[:3]
    if image.shape[0] == 2:  # grey + alpha
        image = image[:1]
    c = image.shape[0]
    if c == channels:
        return image
    if c == 1 and channels == 3:
        return image.expand(3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype).view(3, 1, 1)
        return (image * weights).sum(dim=0, keepdim=True)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def _hwc_to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) float array → (C, H, W) float32 tensor."""
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))


def _scale_integer(array: np.ndarray) -> np.ndarray:
    """Integer arrays scaled by their dtype's maximum (uint8 → /255, uint16 → /65535); floats unchanged."""
    if np.issubdtype(array.dtype, np.bool_):
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        if info.min < 0:
            # signed: map the dtype's full range onto [0, 1]
            return (array.astype(np.float64) - info.min) / (info.max - info.min)
        return array.astype(np.float64) / info.max
    return array.astype(np.float64, copy=False)


# ----------------------------------------------------------------------------------------- PIL


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_depth(source: Any) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, or None for anything else (file path or binary file object)."""
    try:
        if hasattr(source, "read"):
            start = source.tell()
            head = source.read(26)
            source.seek(start)
        else:
            with open(source, "rb") as handle:
                head = handle.read(26)
    except OSError:
        return None
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _load_png16_colour(path: Any) -> np.ndarray:
    """A 16-bit colour (or grey + alpha) PNG as uint16 (H, W, C) with alpha dropped, via pypng."""
    import png

    reader = png.Reader(bytes=path.read()) if hasattr(path, "read") else png.Reader(filename=os.fspath(path))
    width, height, rows, info = reader.asDirect()
    planes = int(info["planes"])
    array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, planes)
    if info.get("alpha"):
        array = array[:, :, : planes - 1]
    return array


def load_pil(path: str | os.PathLike[str], record_id: str | None = None) -> torch.Tensor:
    """PNG/JPEG/TIFF/… → ``(C, H, W)`` float32 in [0, 1] (C = 1 grey, 3 colour).

    16-bit greyscale (PIL modes ``I;16*``/``I``) is scaled by 65535, 8-bit by 255, float (``F``)
    is kept as is. 16-bit-per-channel colour PNGs (48-bit RGB, 64-bit RGBA, 32-bit grey + alpha),
    which Pillow reduces to 8 bits, are decoded with pypng and scaled by 65535. Palette, CMYK and
    alpha images become RGB / grey.
    """
    from PIL import Image, UnidentifiedImageError

    header = _png_depth(path)
    if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
        try:
            return _hwc_to_tensor(_load_png16_colour(path).astype(np.float64) / 65535.0)
        except FileNotFoundError:
            raise ImageLoadError(path, "file not found", record_id) from None
        except Exception as exc:  # pypng's FormatError, ChunkError, zlib errors, …
            raise ImageLoadError(path, f"unreadable or corrupt 16-bit PNG ({type(exc).__name__}: {exc})",
                                 record_id) from None
    try:
        with Image.open(path) as opened:
            opened.load()
            img: Image.Image = opened
            if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBA", "RGBX"):
                img = img.convert("RGB")
            elif img.mode in ("1", "LA", "La"):
                img = img.convert("L")
            array = np.asarray(img)
            mode = img.mode
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found", record_id) from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, f"image too large to decode safely ({exc}); raise PIL.Image.MAX_IMAGE_PIXELS "
                             "if the file is trusted", record_id) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(path, f"unreadable or corrupt image ({exc})", record_id) from None
    except Exception as exc:  # any other decoder failure (plugin-specific errors) still names the record
        raise ImageLoadError(path, f"cannot decode image ({type(exc).__name__}: {exc})", record_id) from None
    if mode.startswith("I;16"):
        scaled = array.astype(np.float64) / 65535.0
    elif mode == "I":  # 32-bit int container; PNG 16-bit is often read like this
        top = 65535.0 if array.max(initial=0) <= 65535 and array.min(initial=0) >= 0 else float(np.iinfo(np.int32).max)
        scaled = array.astype(np.float64) / top
    elif mode == "F":
        scaled = array.astype(np.float64)
    else:
        scaled = _scale_integer(array)
    return _hwc_to_tensor(scaled)


# ----------------------------------------------------------------------------------------- arrays


def load_array(path: str | os.PathLike[str], record_id: str | None = None) -> torch.Tensor:
    """``.npy`` image → ``(C, H, W)`` float32.

    Accepts (H, W), (H, W, C) with C in {1, 3, 4} or (C, H, W) with C in {1, 3}. Integer
    arrays are scaled by their dtype maximum; float arrays are returned unscaled (store them
    in [0, 1]). Non-finite values are an error.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found", record_id) from None
    except Exception as exc:  # ValueError, OSError, EOFError, UnpicklingError, …
        raise ImageLoadError(path, f"not a readable .npy array ({type(exc).__name__}: {exc})", record_id) from None
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4)):
        raise ImageLoadError(path, f"array of shape {array.shape} is not an image (H, W[, C])", record_id)
    if not (np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)):
        raise ImageLoadError(path, f"array dtype {array.dtype} is not numeric", record_id)
    scaled = _scale_integer(array)
    if not np.isfinite(scaled).all():
        raise ImageLoadError(path, "array contains NaN or infinite values", record_id)
    return _hwc_to_tensor(scaled)


# ----------------------------------------------------------------------------------------- DICOM


def window_linear(
    values: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """VOI windowing to [0, 1] (DICOM PS3.3 C.11.2.1.2).

    ``LINEAR``: y = ((x − (c − 0.5)) / (w − 1) + 0.5), clipped, 0 below
    ``c − 0.5 − (w − 1)/2`` and 1 above ``c − 0.5 + (w − 1)/2`` (needs w ≥ 1);
    ``LINEAR_EXACT``: y = (x − c)/w + 0.5, clipped (w > 0);
    ``SIGMOID``: y = 1 / (1 + exp(−4 (x − c)/w)).
    """
    x = values.astype(np.float64, copy=False)
    function = function.upper()
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"window width must be > 0, got {width}")
        return np.asarray(1.0 / (1.0 + np.exp(-4.0 * (x - center) / width)))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"window width must be > 0, got {width}")
        return np.asarray(np.clip((x - center) / width + 0.5, 0.0, 1.0))
    if function != "LINEAR":
        raise ValueError(f"unknown VOI LUT function {function!r}")
    if width < 1:
        raise ValueError(f"window width must be >= 1, got {width}")
    if width == 1:
        return (x > center - 0.5).astype(np.float64)
    return np.asarray(np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0))


def _first(value: Any) -> float:
    """First value of a possibly multi-valued DICOM element, as float."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values, dtype=np.float64)
    return (values.astype(np.float64) - lo) / (hi - lo)


def dicom_to_float(
    ds: Any,
    *,
    window: WindowMode = "header",
    window_override: tuple[float, float] | None = None,
    frame: int = 0,
) -> np.ndarray:
    """Pixel data of a pydicom dataset → float64 (H, W) or (H, W, 3) in [0, 1].

    Args:
        ds: a ``pydicom.Dataset`` with pixel data.
        window: ``header`` uses the file's window (or VOI LUT), falling back to min–max;
            ``minmax`` ignores the window and min–max scales the rescaled values.
        window_override: ``(center, width)`` in rescaled units, used instead of the header.
        frame: frame index for multi-frame files.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    pixels = ds.pixel_array
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if n_frames > 1:
        if not 0 <= frame < n_frames:
            raise ValueError(f"frame {frame} out of range for {n_frames} frames")
        pixels = pixels[frame]
    if not photometric.startswith("MONOCHROME"):
        if photometric != "RGB" and hasattr(ds, "PhotometricInterpretation"):
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        return _scale_integer(np.asarray(pixels))
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    if window_override is not None:
        out = window_linear(values, window_override[0], window_override[1])
    elif window == "header" and "WindowCenter" in ds and "WindowWidth" in ds:
        function = str(getattr(ds, "VOILUTFunction", "LINEAR") or "LINEAR")
        out = window_linear(values, _first(ds.WindowCenter), _first(ds.WindowWidth), function)
    elif window == "header" and "VOILUTSequence" in ds:
        out = _minmax(np.asarray(apply_voi_lut(pixels, ds), dtype=np.float64))
    else:
        out = _minmax(values)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out


def load_dicom(
    path: str | os.PathLike[str],
    record_id: str | None = None,
    *,
    window: WindowMode = "header",
    window_override: tuple[float, float] | None = None,
    frame: int = 0,
) -> torch.Tensor:
    """DICOM file → ``(C, H, W)`` float32 in [0, 1] (see :func:`dicom_to_float`)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        array = dicom_to_float(ds, window=window, window_override=window_override, frame=frame)
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found", record_id) from None
    except Exception as exc:  # InvalidDicomError, pixel-data handler errors, …
        raise ImageLoadError(path, f"unreadable DICOM ({type(exc).__name__}: {exc})", record_id) from None
    if array.ndim == 3 and array.shape[-1] not in (1, 3):
        raise ImageLoadError(path, f"pixel data of shape {array.shape} is not a 2-D image", record_id)
    return _hwc_to_tensor(array)


# ----------------------------------------------------------------------------------------- feature bags


def _pick(mapping: dict[str, Any], path: str | os.PathLike[str], key: str | None, record_id: str | None) -> Any:
    if key is not None:
        if key not in mapping:
            raise ImageLoadError(path, f"key {key!r} not found (has {sorted(mapping)})", record_id)
        return mapping[key]
    for candidate in FEATURE_BAG_KEYS:
        if candidate in mapping:
            return mapping[candidate]
    if len(mapping) == 1:
        return next(iter(mapping.values()))
    raise ImageLoadError(
        path, f"several arrays {sorted(mapping)} and none of {FEATURE_BAG_KEYS}; name one with key=", record_id
    )


BagLayout = Literal["auto", "flat", "regions"]


def load_feature_bag(
    path: str | os.PathLike[str], record_id: str | None = None, *, key: str | None = None,
    layout: BagLayout = "auto",
) -> torch.Tensor:
    """Feature bag → ``FloatTensor (n_regions, d)`` or region tokens ``(n_regions, n_tokens, d)``.

    Formats by extension: ``.pt``/``.pth`` (``torch.load(weights_only=True)``; a tensor or a
    dict of tensors), ``.npy``, ``.h5``/``.hdf5`` (a dataset), ``.safetensors``. Multi-array
    files use ``key``, else the first of :data:`FEATURE_BAG_KEYS` present, else their only array.
    ``layout``: ``flat`` = (n, d) bags, a leading batch axis of size 1 squeezed ((1, n, d) as
    CLAM writes); ``regions`` = (M, T, d) region-token bags (HIPT: T = 64 or 256 patch features
    per region) or (M, d) region features, a leading axis of 1 squeezed only from 4-D arrays;
    ``auto`` = 2-D flat, 3-D with a leading 1 as ``flat``, other 3-D as regions. Non-finite
    values and empty bags are errors.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if not file.is_file():
        raise ImageLoadError(path, "file not found", record_id)
    try:
        if suffix in (".pt", ".pth"):
            obj = torch.load(file, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                obj = _pick(obj, path, key, record_id)
            if not isinstance(obj, torch.Tensor):
                raise ImageLoadError(path, f"expected a tensor, got {type(obj).__name__}", record_id)
            array = obj.detach().to(torch.float32).numpy()
        elif suffix == ".npy":
            array = np.load(file, allow_pickle=False)
        elif suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(file, "r") as handle:
                datasets = {k: v for k, v in handle.items() if isinstance(v, h5py.Dataset)}
                array = np.asarray(_pick(datasets, path, key, record_id)[()])
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file

            array = _pick(load_file(str(file)), path, key, record_id)
        else:
            raise ImageLoadError(path, f"unknown feature-bag extension {suffix!r}", record_id)
    except ImageLoadError:
        raise
    except Exception as exc:  # corrupt files raise library-specific errors
        raise ImageLoadError(path, f"unreadable feature bag ({type(exc).__name__}: {exc})", record_id) from None
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[0] == 1 and layout != "flat":
        array = array[0]
    if array.ndim == 3 and array.shape[0] == 1 and layout in ("auto", "flat"):
        array = array[0]
    if array.ndim == 1:
        array = array[None, :]
    allowed = (2,) if layout == "flat" else (2, 3)
    if array.ndim not in allowed:
        want = "(n_regions, d)" if layout == "flat" else "(n_regions, d) or (n_regions, n_tokens, d)"
        raise ImageLoadError(path, f"feature bag must be {want} (layout {layout}), got shape {array.shape}",
                             record_id)
    if array.shape[0] == 0 or (array.ndim == 3 and array.shape[1] == 0):
        raise ImageLoadError(path, f"feature bag is empty (shape {array.shape})", record_id)
    if not np.issubdtype(array.dtype, np.number):
        raise ImageLoadError(path, f"feature bag dtype {array.dtype} is not numeric", record_id)
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not torch.isfinite(tensor).all():
        raise ImageLoadError(path, "feature bag contains NaN or infinite values", record_id)
    return tensor


# ----------------------------------------------------------------------------------------- dispatch


def load_image(
    path: str | os.PathLike[str],
    image_type: str,
    record_id: str | None = None,
    *,
    channels: int | None = None,
    dicom_window: WindowMode = "header",
) -> torch.Tensor:
    """Image of type ``image`` / ``dicom`` / ``array`` → ``(C, H, W)`` float32 in [0, 1].

    With ``channels`` (1 or 3) the result is converted with :func:`to_channels`.
    """
    if image_type == "image":
        out = load_pil(path, record_id)
    elif image_type == "dicom":
        out = load_dicom(path, record_id, window=dicom_window)
    elif image_type == "array":
        out = load_array(path, record_id)
    elif image_type == "feature_bag":
        raise ImageLoadError(path, "is a feature bag, not an image; use load_feature_bag", record_id)
    else:
        raise ImageLoadError(path, f"unknown image type {image_type!r}", record_id)
    if out.shape[1] == 0 or out.shape[2] == 0:
        raise ImageLoadError(path, f"image has zero size {tuple(out.shape)}", record_id)
    if channels is not None:
        out = to_channels(out, channels)
    return out


def load_record(
    path: str | os.PathLike[str],
    image_type: str,
    record_id: str | None = None,
    *,
    channels: int | None = None,
    dicom_window: WindowMode = "header",
    bag_key: str | None = None,
    bag_layout: BagLayout = "auto",
) -> torch.Tensor:
    """Load whatever a record references: an image (C, H, W) or a feature bag (see :func:`load_feature_bag`)."""
    if image_type == "feature_bag":
        return load_feature_bag(path, record_id, key=bag_key, layout=bag_layout)
    return load_image(path, image_type, record_id, channels=channels, dicom_window=dicom_window)


# ----------------------------------------------------------------------------------------- raw 8-bit RGB

#: PIL modes whose samples are 8 bits or fewer: decoded as ``Image.open(path).convert("RGB")``.
_PIL_8BIT_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr",
                             "LAB", "HSV"})


def load_rgb8(
    path: str | os.PathLike[str],
    image_type: str,
    record_id: str | None = None,
    *,
    dicom_window: WindowMode = "header",
) -> Any:
    """The decoded image as an 8-bit RGB ``PIL.Image`` — the input a published model's own
    preprocessing (its Hugging Face image processor, open_clip's or timm's transform) expects.

    8-bit files (PNG/JPEG/… in modes L, RGB, P, RGBA, …) are exactly ``Image.open(path).convert("RGB")``
    (alpha dropped, grey repeated). Images with more than 8 bits per sample (16-bit PNG, DICOM after
    its VOI window, float or integer ``.npy``) are decoded by :func:`load_image` to [0, 1] and
    quantised as ``round(255 · x)``, grey repeated to RGB.
    """
    from PIL import Image, UnidentifiedImageError

    depth = _png_depth(path) if image_type == "image" else None
    if image_type == "image" and not (depth is not None and depth[0] == 16):  # 16-bit: load_image below
        try:
            with Image.open(path) as opened:
                if opened.mode in _PIL_8BIT_MODES:
                    opened.load()
                    rgb = opened.convert("RGB")
                    if rgb.width == 0 or rgb.height == 0:
                        raise ImageLoadError(path, f"image has zero size {rgb.size}", record_id)
                    return rgb
        except FileNotFoundError:
            raise ImageLoadError(path, "file not found", record_id) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            if isinstance(exc, ImageLoadError):
                raise
            raise ImageLoadError(path, f"unreadable or corrupt image ({exc})", record_id) from None
        except Exception as exc:  # DecompressionBombError and other decoder errors name the record too
            raise ImageLoadError(path, f"cannot decode image ({type(exc).__name__}: {exc})", record_id) from None
    image = load_image(path, image_type, record_id, channels=3, dicom_window=dicom_window)
    array = (image.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(array, mode="RGB")
