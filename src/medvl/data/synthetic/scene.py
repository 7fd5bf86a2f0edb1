"""Rendering of the normal anatomy into a density map, and composition into an 8-bit radiograph.

A ``Scene`` holds, on the pixel grid of one image, the patient coordinates, the two lungs
(each on its own pixel *window*, the bounding box of that lung, to keep the work small) with
lung-relative coordinates, and editable layers that findings modify: ``extra`` density,
``marking_gain``, rib breaks and an image-space ``overlay``. ``compose`` turns density into
brightness with an exponential (Beer–Lambert-like) response and a gamma (one look-up table
per image), adds noise and quantises to uint8.

Density units: soft tissue ≈ 0.4–0.5, aerated lung ≈ 0.05, mediastinum and heart ≈ 0.75,
ribs +0.07, tubes +0.4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from medvl.data.synthetic.anatomy import Acquisition, Anatomy, Geometry, LungGeometry
from medvl.data.synthetic.textures import TextureBank, noise_bank

__all__ = ["LungField", "RibBreak", "Scene", "image_grid", "ramp", "rib_curve"]

try:  # the clip ufunc itself: np.clip adds four Python frames per call (~35 calls per image)
    from numpy._core.umath import clip as _clip  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other numpy layouts
    _clip = np.clip

_F32 = np.float32
_EDGE = 0.022  # soft-edge width of organ outlines (normalised units)
_LUNG_AIR = 0.36
_CENTRE = 0.08  # mediastinum / heart over the body
_MARKINGS = 0.1
_RIBS = 0.075
_LUT_LEVELS = 2048
_DENSITY_MAX = 1.2
_NOISE_BANK_MAX_SIZE = 512


def ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Soft step: 0 for ``d <= -width/2``, 1 for ``d >= width/2``, linear between (float32)."""
    out = np.multiply(d, _F32(1.0 / width), dtype=np.float32)
    out += _F32(0.5)
    _clip(out, _F32(0.0), _F32(1.0), out=out)  # (np.minimum/np.maximum are ~3x slower here)
    return out


def rib_curve(u: np.ndarray | float) -> np.ndarray:
    """Vertical course of a posterior rib at distance ``u`` from the spine: it rises from the
    costovertebral junction, arches and falls towards the lateral chest wall."""
    u = np.asarray(u)
    return np.asarray(_F32(-0.8) * u + _F32(0.95) * u * u)


@lru_cache(maxsize=8)
def image_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates ``(u, v)``, each (size, size) float32 in [-1, 1]."""
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    u, v = np.meshgrid(axis, axis)
    u.setflags(write=False)
    v.setflags(write=False)
    return u, v


@dataclass
class LungField:
    """One lung on its pixel window ``window`` = (rows, cols) of the image.

    ``x``, ``y``: patient coordinates; ``u``: distance from the midline towards this side;
    ``medial``, ``top``, ``dome``: the lung's medial edge, upper border and diaphragm at each
    pixel; ``mask``: soft membership in [0, 1]. ``a`` (lateral fraction: 0 medial edge → 1
    lateral chest wall) and ``b`` (vertical fraction: 0 upper border → 1 diaphragm) are computed
    on first use (only findings need them). All float32 arrays of the window's shape.
    """

    geometry: LungGeometry
    window: tuple[slice, slice]
    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    medial: np.ndarray
    top: np.ndarray
    dome: np.ndarray
    mask: np.ndarray
    texture_index: np.ndarray | None = None
    _a: np.ndarray | None = field(default=None, repr=False)
    _b: np.ndarray | None = field(default=None, repr=False)

    @property
    def a(self) -> np.ndarray:
        """Lateral fraction, 0 at the medial edge, 1 at the lateral chest wall."""
        if self._a is None:
            g = self.geometry
            self._a = (self.u - self.medial) * _F32(1.0 / max(g.lateral - g.medial, 0.05))
        return self._a

    @property
    def b(self) -> np.ndarray:
        """Vertical fraction, 0 at the upper border (apex), 1 at the diaphragm."""
        if self._b is None:
            self._b = (self.y - self.top) / np.maximum(self.dome - self.top, _F32(0.1))
        return self._b


@dataclass(frozen=True)
class RibBreak:
    """A cortical break of rib ``index`` on ``side`` at distance ``u0`` from the midline.

    ``gap``: half-width of the break (normalised units); ``step``: displacement of the lateral
    fragment in rib spacings (0 = undisplaced).
    """

    side: str
    index: int
    u0: float
    gap: float
    step: float


@dataclass
class Scene:
    """Editable rendering state of one image (see the module docstring)."""

    anatomy: Anatomy
    acquisition: Acquisition
    geometry: Geometry
    size: int
    bank: TextureBank
    x: np.ndarray = field(init=False, repr=False)
    y: np.ndarray = field(init=False, repr=False)
    lungs: dict[str, LungField] = field(init=False, repr=False)
    heart: np.ndarray = field(init=False, repr=False)
    density: np.ndarray = field(init=False, repr=False)
    extra: np.ndarray = field(init=False, repr=False)
    marking_gain: np.ndarray = field(init=False, repr=False)
    rib_breaks: list[RibBreak] = field(init=False, repr=False)
    overlay: np.ndarray | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        acq = self.acquisition
        u, v = image_grid(self.size)
        c, s = _F32(np.cos(acq.rotation)), _F32(np.sin(acq.rotation))
        inv = _F32(1.0 / acq.scale)
        du = u - _F32(acq.shift_x)
        dv = v - _F32(acq.shift_y)
        self.x = (c * du + s * dv) * inv
        self.y = (c * dv - s * du) * inv
        self.lungs = {side: self._lung_field(self.geometry.lung(side)) for side in ("right", "left")}
        self.heart = self._heart()
        self.density = self._soft_tissue()
        self.extra = np.zeros_like(self.x)
        self.marking_gain = np.ones_like(self.x)
        self.rib_breaks = []
        self.overlay = None

    # ------------------------------------------------------------------ coordinates
    def to_pixels(self, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patient coordinates → (column, row) pixel coordinates (float)."""
        acq = self.acquisition
        c, s = np.cos(acq.rotation), np.sin(acq.rotation)
        u = acq.shift_x + acq.scale * (c * np.asarray(px) - s * np.asarray(py))
        v = acq.shift_y + acq.scale * (s * np.asarray(px) + c * np.asarray(py))
        half = 0.5 * (self.size - 1)
        return (u + 1.0) * half, (v + 1.0) * half

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
        """Pixel window (rows, cols) covering the patient-space box [x0, x1] × [y0, y1]."""
        acq = self.acquisition
        c, s, k = math.cos(acq.rotation) * acq.scale, math.sin(acq.rotation) * acq.scale, 0.5 * (self.size - 1)
        cols = [(acq.shift_x + c * px - s * py + 1.0) * k for px, py in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))]
        rows = [(acq.shift_y + s * px + c * py + 1.0) * k for px, py in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))]
        c0, c1 = math.floor(min(cols)), math.ceil(max(cols)) + 1
        r0, r1 = math.floor(min(rows)), math.ceil(max(rows)) + 1
        n = self.size
        return slice(min(max(r0, 0), n), min(max(r1, 0), n)), slice(min(max(c0, 0), n), min(max(c1, 0), n))

    # ------------------------------------------------------------------ anatomy layers
    def _lung_field(self, lung: LungGeometry) -> LungField:
        margin = 0.05
        lo = lung.medial - margin
        hi = lung.lateral + margin
        xs = (lung.sign * lo, lung.sign * hi)
        window = self.window(min(xs), max(xs), lung.top - margin,
                             lung.dome + lung.dome_depth + margin)
        x, y = self.x[window], self.y[window]
        u = x * _F32(lung.sign)
        medial = _F32(lung.medial) + _F32(lung.medial_slope) * (y - _F32(lung.top))
        top = lung.top_at(u).astype(np.float32, copy=False)
        dome = lung.dome_at(u).astype(np.float32, copy=False)
        mask = ramp(_F32(lung.lateral) - u, _EDGE)
        mask *= ramp(u - medial, _EDGE)
        mask *= ramp(dome - y, _EDGE)
        mask *= ramp(y - top, _EDGE)
        return LungField(lung, window, x, y, u, medial, top, dome, mask)

    def _heart(self) -> np.ndarray:
        """Heart shadow (H, W) in [0, 1]: an ellipse resting on the diaphragm, mostly left of midline."""
        g = self.geometry
        hx, hy = g.heart_center
        hw, hh = g.heart_half_width, g.heart_half_height
        heart = np.zeros_like(self.x)
        window = self.window(hx - hw - 0.05, hx + hw + 0.05, hy - hh - 0.05, hy + hh + 0.05)
        dx = (self.x[window] - _F32(hx)) * _F32(1.0 / hw)
        dy = (self.y[window] - _F32(hy)) * _F32(1.0 / hh)
        q = np.sqrt(dx * dx + dy * dy)
        part = ramp((_F32(1.0) - q) * _F32(hw), _EDGE)
        dome = 0.5 * (g.right.dome + g.left.dome)  # fade out below the domes
        part *= ramp(_F32(dome + 0.1) - self.y[window], 0.1)
        heart[window] = part
        return heart

    def _soft_tissue(self) -> np.ndarray:
        """Density of everything but ribs, lung markings and findings, (H, W) float32."""
        a, g = self.anatomy, self.geometry
        x, y = self.x, self.y
        ax = np.abs(x)
        # body: thicker centrally, tapering to the neck above the shoulders
        rel = ax * _F32(1.0 / g.body_half_width)
        thickness = _F32(0.5) - _F32(0.14) * rel * rel
        d = ramp(_F32(g.body_half_width) - ax, 0.1)
        top = self.window(-1.5, 1.5, -1.5, -0.7)
        half = _F32(g.body_half_width) * (_F32(1.0) - _F32(0.5) * ramp(_F32(-0.95) - y[top], 0.4))
        d[top] = ramp(half - ax[top], 0.1)
        d *= thickness
        # mediastinum (widening caudally) merged with the heart shadow and the aortic knob
        mw = g.mediastinum_half_width
        hx, hw = g.heart_center[0], g.heart_half_width
        window = self.window(min(-mw - 0.1, hx - hw - 0.05), max(mw + 0.15, hx + hw + 0.05), -1.1, 1.1)
        wx, wy = x[window], y[window]
        med_half = _F32(mw) + _F32(0.03) * (wy + _F32(1.0))
        medi = ramp(med_half - np.abs(wx - _F32(0.01)), _EDGE) * ramp(_F32(0.6) - wy, 0.15)
        kx, ky = mw + 0.03, -0.38
        knob = ramp(_F32(0.0036) - (wx - _F32(kx)) ** 2 - (wy - _F32(ky)) ** 2, 0.002)
        centre = np.zeros_like(x)
        centre[window] = np.maximum(np.maximum(medi, self.heart[window]), knob)
        d[window] += _F32(_CENTRE) * centre[window]
        # trachea (air column) and the thoracic spine with its vertebral bodies
        window = self.window(-0.08, 0.08, -1.1, -0.2)
        d[window] -= _F32(0.1) * ramp(_F32(0.024) - ax[window], 0.012) * ramp(_F32(-0.32) - y[window], 0.05)
        window = self.window(-0.09, 0.09, -1.1, 1.1)
        wy = y[window] * _F32(1 / 0.09)
        vert = np.abs(wy - np.round(wy))  # 0 mid-vertebra, 0.5 at a disc space
        d[window] += _F32(0.035) * ramp(_F32(0.058) - ax[window], 0.012) * (_F32(1.0) - vert)
        # clavicles: medial ends lower than lateral ends
        window = self.window(-0.7, 0.7, a.clavicle_y - 0.1, a.clavicle_y + 0.15)
        wax, wy = ax[window], y[window]
        yc = _F32(a.clavicle_y + 0.09) - _F32(0.17) * wax
        clav = ramp(_F32(0.022) - np.abs(wy - yc), 0.012) * ramp(wax - _F32(0.07), 0.03)
        clav *= ramp(_F32(0.62) - wax, 0.06)
        d[window] += _F32(0.14) * clav
        # lungs: air replaces tissue, except behind the heart where it is only partly seen
        for lung in self.lungs.values():
            see_through = _F32(1.0) - _F32(0.8) * centre[lung.window]
            d[lung.window] -= _F32(_LUNG_AIR) * lung.mask * see_through
        # gastric air bubble under the left hemidiaphragm
        bx, by = 0.3, g.left.dome + 0.14
        window = self.window(bx - 0.12, bx + 0.12, by - 0.07, by + 0.07)
        dx, dy = (x[window] - _F32(bx)) * _F32(10.0), (y[window] - _F32(by)) * _F32(20.0)
        d[window] -= _F32(0.12) * ramp(_F32(1.0) - dx * dx - dy * dy, 0.6)
        return d

    # ------------------------------------------------------------------ textures
    def texture(self, kind: str, lung: LungField, salt: int = 0) -> np.ndarray:
        """Texture ``kind`` ("markings" or "blobs") sampled on ``lung``'s window, float32 in [0, 1]."""
        if lung.texture_index is None:
            lung.texture_index = self.bank.lookup_index(lung.x, lung.y, self.acquisition.texture_shift)
        index = lung.texture_index
        k = (self.anatomy.marking_texture if kind == "markings" else self.anatomy.blob_texture) + salt
        return self.bank.sample(kind, k, index)

    def ensure_overlay(self) -> np.ndarray:
        """Image-space density added after everything else (radio-opaque devices)."""
        if self.overlay is None:
            self.overlay = np.zeros_like(self.x)
        return self.overlay

    # ------------------------------------------------------------------ ribs and composition
    def _ribs(self, d: np.ndarray) -> None:
        """Add posterior (and faint anterior) ribs, with any cortical breaks, to ``d`` in place."""
        a, g = self.anatomy, self.geometry
        r, l_ = g.right, g.left
        lateral = max(r.lateral, l_.lateral) + 0.07
        window = self.window(-lateral, lateral, r.top - 0.14, max(r.dome, l_.dome) + 0.14)
        x, y = self.x[window], self.y[window]
        ax = np.abs(x)
        inv_spacing = _F32(1.0 / a.rib_spacing)
        phase = (y - rib_curve(ax)) * inv_spacing - _F32(a.rib_offset)
        for rib_break in self.rib_breaks:
            if rib_break.step:
                u = x * _F32(-1.0 if rib_break.side == "right" else 1.0)
                near = np.abs(phase - _F32(rib_break.index)) < 0.5
                phase = phase + _F32(rib_break.step) * ramp(u - _F32(rib_break.u0), 0.01) * near
        tri = np.abs(phase - np.round(phase))  # 0 at a rib's centre line, 0.5 between ribs
        ribs = ramp(_F32(0.2) - tri, 0.12)
        for rib_break in self.rib_breaks:
            u = x * _F32(-1.0 if rib_break.side == "right" else 1.0)
            near = np.abs(phase - _F32(rib_break.index)) < 0.6
            ribs *= _F32(1.0) - ramp(_F32(rib_break.gap) - np.abs(u - _F32(rib_break.u0)), 0.006) * near
        # faint anterior ribs running down towards the sternum
        ant = (y + _F32(0.55) * ax) * _F32(1.0 / (1.2 * a.rib_spacing))
        ribs += _F32(0.35) * ramp(_F32(0.15) - np.abs(ant - np.round(ant)), 0.12) * ramp(ax - _F32(0.2), 0.1)
        cage = ramp(ax - _F32(0.09), 0.04) * ramp(_F32(lateral) - ax, 0.05)
        cage *= ramp(y - _F32(r.top - 0.08), 0.08) * ramp(_F32(max(r.dome, l_.dome) + 0.08) - y, 0.1)
        d[window] += _F32(_RIBS) * ribs * cage

    def compose(self, noise_rng: np.random.Generator) -> np.ndarray:
        """Density → uint8 radiograph (H, W). ``noise_rng`` picks this image's noise."""
        acq = self.acquisition
        d = self.density + self.extra
        self._ribs(d)
        for lung in self.lungs.values():
            gain = self.marking_gain[lung.window]
            d[lung.window] += _F32(_MARKINGS) * self.texture("markings", lung) * gain * lung.mask
        if self.overlay is not None:
            d += self.overlay
        # one look-up table per image: exposure response and gamma, in 0..255
        levels = np.linspace(0.0, _DENSITY_MAX, _LUT_LEVELS)
        response = (1.0 - np.exp(-acq.exposure * levels)) / (1.0 - np.exp(-acq.exposure * _DENSITY_MAX))
        lut = (255.0 * response**acq.gamma + 0.5).astype(np.float32)
        index = d * _F32((_LUT_LEVELS - 1) / _DENSITY_MAX)
        np.clip(index, 0, _LUT_LEVELS - 1, out=index)
        img = lut[index.astype(np.int32)]
        img += _noise(self.size, noise_rng) * _F32(255.0 * acq.noise_sigma)
        np.clip(img, 0.0, 255.0, out=img)
        return img.astype(np.uint8)


def _noise(size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) float32 standard-normal noise: a window of the noise bank, or fresh for large images."""
    if size > _NOISE_BANK_MAX_SIZE:
        return rng.standard_normal((size, size), dtype=np.float32)
    bank = noise_bank(size)
    k, r0, c0 = rng.integers(0, (bank.shape[0], size, size))
    return np.asarray(bank[k, r0 : r0 + size, c0 : c0 + size])
