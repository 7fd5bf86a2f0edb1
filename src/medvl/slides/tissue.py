"""Tissue detection on a slide thumbnail: Otsu's threshold on colour saturation.

H&E tissue is coloured while glass and background are grey/white, so the HSV saturation
``(max − min) / max`` of each thumbnail pixel separates them. The threshold is Otsu's (the level
that maximises the between-class variance of the saturation histogram), computed after a light
Gaussian blur (``smooth`` pixels) that evens out noise; an opening removes specks, holes inside
tissue (gland lumens, fat) are filled, and components smaller than ``min_component`` of the
thumbnail are dropped. Thumbnails are RGB ``uint8``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["otsu_threshold", "saturation", "tissue_mask"]


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] of an RGB image (h, w, 3); 0 for black pixels."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # element-wise: much faster than max over a 3-long axis
    high = np.maximum(np.maximum(r, g), b).astype(np.float32)
    low = np.minimum(np.minimum(r, g), b).astype(np.float32)
    out = np.zeros_like(high)
    np.divide(high - low, high, out=out, where=high > 0)
    return out


def otsu_threshold(values: np.ndarray, bins: int = 256, value_range: tuple[float, float] = (0.0, 1.0)) -> float:
    """Otsu's threshold of ``values``: the bin edge ``t`` maximising ``w0·w1·(μ0 − μ1)²`` between the
    classes ``≤ t`` and ``> t`` of a ``bins``-bin histogram over ``value_range``.

    Returns the upper edge of the last bin of the lower class (values ``> t`` are foreground).
    A constant input returns its value. The bins are ``np.histogram``'s (equal widths, the last one
    closed), counted with ``np.bincount`` (≈ 5× faster on a thumbnail); values outside
    ``value_range`` count in the end bins instead of being dropped.
    """
    flat = np.asarray(values).ravel()
    if flat.size == 0:
        raise ValueError("otsu_threshold of an empty array")
    lo, hi = value_range
    edges = np.linspace(lo, hi, bins + 1)
    scaled = (flat - lo) * (bins / (hi - lo))  # a new float array
    if np.isnan(scaled).any():
        raise ValueError("otsu_threshold of values with NaN")
    # clipping before truncating to an integer bin gives the same bins (in place, on the float array)
    index = np.clip(scaled, 0, bins - 1, out=scaled).astype(np.intp)
    counts = np.bincount(index, minlength=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(counts)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(counts * centers)
    mean0 = np.divide(sum0, weight0, out=np.zeros_like(sum0), where=weight0 > 0)
    mean1 = np.divide(sum0[-1] - sum0, weight1, out=np.zeros_like(sum0), where=weight1 > 0)
    between = weight0.astype(np.float64) * weight1 * (mean0 - mean1) ** 2
    if not np.any(between > 0):
        return float(flat[0])
    return float(edges[int(np.argmax(between)) + 1])


def tissue_mask(
    thumbnail: np.ndarray,
    *,
    smooth: float = 1.0,
    min_saturation: float = 0.05,
    min_component: float = 0.0005,
    open_size: int = 3,
) -> np.ndarray:
    """Boolean tissue mask (h, w) of an RGB thumbnail (see the module docstring).

    ``min_saturation`` is a floor for the threshold, so a thumbnail of glass only (whose Otsu
    threshold would split noise) gives an empty mask.
    """
    from scipy import ndimage

    sat = saturation(thumbnail)
    if smooth > 0:
        sat = ndimage.gaussian_filter(sat, sigma=smooth)
    threshold = max(otsu_threshold(sat), min_saturation)
    mask = sat > threshold
    if open_size > 1:
        mask = _opening(mask, open_size)
    mask = _fill_holes(mask)
    if min_component > 0 and mask.any():
        labels, n = ndimage.label(mask)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        keep = sizes >= max(1, min_component * mask.size)
        keep[0] = False
        mask = keep[labels]
    return np.asarray(mask, dtype=bool)


def _opening(mask: np.ndarray, size: int) -> np.ndarray:
    """``ndimage.binary_opening`` with a ``size`` × ``size`` square (outside the image is background),
    as separable erosions and dilations by shifted boolean AND/OR: the same mask, ~10× faster than
    scipy's minimum/maximum filters on a thumbnail (``size`` is small, a few slicing passes)."""
    start = -(size // 2)
    eroded = _window_reduce(_window_reduce(mask, size, start, 0, erode=True), size, start, 1, erode=True)
    # binary_dilation reflects the structure: for even sizes its window starts one pixel later
    start = start + 1 if size % 2 == 0 else start
    return _window_reduce(_window_reduce(eroded, size, start, 0, erode=False), size, start, 1, erode=False)


def _window_reduce(mask: np.ndarray, size: int, start: int, axis: int, *, erode: bool) -> np.ndarray:
    """``out[i] = AND`` (``erode``) or ``OR`` of ``mask[i + start + j]`` for ``j < size`` along ``axis``;
    pixels outside the image are background (False)."""
    n = mask.shape[axis]
    out = np.ones_like(mask, dtype=bool) if erode else np.zeros_like(mask, dtype=bool)
    view = np.moveaxis(out, axis, 0)  # views: writing through them writes ``out``
    source = np.moveaxis(np.asarray(mask, dtype=bool), axis, 0)
    for j in range(size):
        shift = start + j  # out[i] takes source[i + shift]
        lo, hi = max(0, -shift), min(n, n - shift)
        if erode:
            if lo < hi:
                view[lo:hi] &= source[lo + shift:hi + shift]
            view[:min(lo, n)] = False  # the window reaches past the border: background there
            view[max(hi, 0):] = False
        elif lo < hi:
            view[lo:hi] |= source[lo + shift:hi + shift]
    return out


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes``: background not 4-connected to the image border becomes tissue.
    One labelling pass instead of scipy's iterated dilation; the same mask."""
    from scipy import ndimage

    labels, n = ndimage.label(~mask)
    reaches_border = np.zeros(n + 1, dtype=bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        reaches_border[edge] = True
    reaches_border[0] = False  # label 0 is the mask itself
    return np.asarray(~reaches_border[labels], dtype=bool)
