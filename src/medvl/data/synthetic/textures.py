"""Precomputed texture banks: lung vessel markings and smooth noise for patchy opacities.

Drawing vessel trees per image would dominate generation time, so each process builds a
small bank once (deterministic: it depends only on the bank resolution) and every image
samples it at its own patient coordinates, which moves the texture with the patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["BANK_SIZE", "TextureBank", "noise_bank", "texture_bank"]

#: Number of textures of each kind in a bank.
BANK_SIZE = 8
_BANK_SEED = 20_241_123
#: Hila (x, y) in patient coordinates; vessels radiate from them.
_HILUM_X, _HILUM_Y = 0.2, -0.02


@dataclass(frozen=True)
class TextureBank:
    """``markings``: (K, R, R) float32 in [0, 1], vessel trees radiating from both hila.
    ``blobs``: (K, R, R) float32 in [0, 1], smooth noise (correlation length ≈ 5 % of the field).
    Both cover patient coordinates [-1, 1]² at resolution ``R``.
    """

    resolution: int
    markings: np.ndarray
    blobs: np.ndarray

    def sample(self, kind: str, k: int, index: np.ndarray) -> np.ndarray:
        """Texture ``k`` of ``kind`` ("markings" or "blobs") at flat ``index`` (from ``lookup_index``)."""
        bank = self.markings if kind == "markings" else self.blobs
        return np.asarray(bank[k % BANK_SIZE].ravel()[index])

    def lookup_index(self, x: np.ndarray, y: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
        """Flat indices into an (R, R) texture for patient coordinates ``x``, ``y`` (nearest texel)."""
        r = self.resolution
        scale = 0.5 * (r - 1)
        ix = ((x + 1.0) * scale + shift[0]).astype(np.int32)
        iy = ((y + 1.0) * scale + shift[1]).astype(np.int32)
        np.clip(ix, 0, r - 1, out=ix)
        np.clip(iy, 0, r - 1, out=iy)
        return np.asarray(iy * r + ix)


def _draw_segment(canvas: np.ndarray, p0: np.ndarray, p1: np.ndarray, width: float, weight: float) -> None:
    """Add a Gaussian-profile line from ``p0`` to ``p1`` (patient coords) to ``canvas`` in place."""
    r = canvas.shape[0]
    lo = np.minimum(p0, p1) - 3 * width
    hi = np.maximum(p0, p1) + 3 * width
    to_px = 0.5 * (r - 1)
    c0, r0 = (int(np.clip((v + 1) * to_px, 0, r)) for v in lo)
    c1, r1 = (int(np.clip((v + 1) * to_px + 2, 0, r)) for v in hi)
    if c1 <= c0 or r1 <= r0:
        return
    xs = np.arange(c0, c1) / (0.5 * (r - 1)) - 1.0
    ys = np.arange(r0, r1) / (0.5 * (r - 1)) - 1.0
    xx, yy = np.meshgrid(xs, ys)
    d = p1 - p0
    t = np.clip(((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / max(float(d @ d), 1e-9), 0.0, 1.0)
    dist2 = (xx - p0[0] - t * d[0]) ** 2 + (yy - p0[1] - t * d[1]) ** 2
    np.maximum(canvas[r0:r1, c0:c1], weight * np.exp(-dist2 / (2 * width**2)), out=canvas[r0:r1, c0:c1])


def _vessel_tree(rng: np.random.Generator, resolution: int) -> np.ndarray:
    canvas = np.zeros((resolution, resolution), dtype=np.float64)
    for sign in (-1.0, 1.0):
        hilum = np.array([sign * _HILUM_X, _HILUM_Y])
        # main branches fan out from the hilum: up, lateral and down (angles from +x, y down)
        for angle in np.linspace(-2.2, 2.0, 13) + rng.normal(0, 0.12, 13):
            direction = np.array([np.cos(angle) * sign, np.sin(angle)])
            if sign * direction[0] < -0.1:  # never cross the midline
                direction[0] = sign * 0.1
            stack = [(hilum, direction, float(rng.uniform(0.22, 0.32)), 0.016, 1.0)]
            while stack:
                p0, dvec, length, width, weight = stack.pop()
                bend = rng.normal(0, 0.25)
                dvec = np.array([dvec[0] * np.cos(bend) - dvec[1] * np.sin(bend),
                                 dvec[0] * np.sin(bend) + dvec[1] * np.cos(bend)])
                p1 = p0 + length * dvec
                _draw_segment(canvas, p0, p1, width, weight)
                if width > 0.007:
                    for turn in (-0.45, 0.45):
                        t = turn + rng.normal(0, 0.15)
                        child = np.array([dvec[0] * np.cos(t) - dvec[1] * np.sin(t),
                                          dvec[0] * np.sin(t) + dvec[1] * np.cos(t)])
                        stack.append((p1, child, length * 0.75, width * 0.65, weight * 0.8))
    # faint interstitial background so the lungs are not perfectly flat between vessels
    canvas += 0.15 * gaussian_filter(rng.standard_normal(canvas.shape), resolution * 0.01)
    canvas -= canvas.min()
    return (canvas / canvas.max()).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, resolution: int) -> np.ndarray:
    field = gaussian_filter(rng.standard_normal((resolution, resolution)), resolution * 0.04, mode="wrap")
    field = (field - field.min()) / (field.max() - field.min())
    return field.astype(np.float32)


@lru_cache(maxsize=4)
def texture_bank(resolution: int) -> TextureBank:
    """The bank at ``resolution`` texels per side (deterministic; cached per process)."""
    if resolution < 16:
        raise ValueError(f"texture resolution must be >= 16, got {resolution}")
    markings = np.stack([_vessel_tree(np.random.default_rng([_BANK_SEED, 0, k, resolution]), resolution)
                         for k in range(BANK_SIZE)])
    blobs = np.stack([_smooth_noise(np.random.default_rng([_BANK_SEED, 1, k, resolution]), resolution)
                      for k in range(BANK_SIZE)])
    markings.setflags(write=False)
    blobs.setflags(write=False)
    return TextureBank(resolution, markings, blobs)


@lru_cache(maxsize=4)
def noise_bank(size: int) -> np.ndarray:
    """(K, 2·size, 2·size) float32 standard-normal fields; an image takes a size×size window at a
    random offset (cheaper than drawing fresh noise, and deterministic)."""
    rng = np.random.default_rng([_BANK_SEED, 2, size])
    bank = rng.standard_normal((BANK_SIZE, 2 * size, 2 * size), dtype=np.float32)
    bank.setflags(write=False)
    return bank
