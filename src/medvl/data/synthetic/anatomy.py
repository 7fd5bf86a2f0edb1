"""Per-patient anatomy and per-image acquisition parameters of a synthetic frontal chest radiograph.

Coordinates: *image* coordinates ``(u, v)`` span [-1, 1] left→right and top→bottom.
*Patient* coordinates ``(x, y)`` are image coordinates undone by the acquisition's shift,
rotation and magnification; all anatomy is described in them. ``x < 0`` is the patient's
right (image left, PA convention), ``y`` grows downwards (caudal).

Lengths are in these normalised units (1.0 = half the image width).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Acquisition", "Anatomy", "Geometry", "LungGeometry"]


@dataclass(frozen=True)
class Anatomy:
    """Patient-level anatomy (fixed across a patient's visits)."""

    thorax_half_width: float  # lateral extent of the lungs at the base
    lung_top: float  # y of the lung apices
    apex_length: float  # how far below the apex the upper border meets the lateral chest wall
    dome_right: float  # y of the right hemidiaphragm apex (higher: liver)
    dome_left_offset: float  # left dome sits this much lower
    dome_depth: float  # how far the costophrenic angle lies below the dome apex
    mediastinum_half_width: float
    heart_ctr: float  # cardiothoracic ratio (heart width / thoracic width), normal 0.40–0.49
    heart_center_y: float
    heart_offset_x: float  # shift of the heart to the patient's left
    body_half_width: float
    rib_spacing: float
    rib_offset: float  # phase of the rib pattern, in rib spacings
    clavicle_y: float
    marking_texture: int  # index into the lung-marking texture bank
    blob_texture: int  # index into the smooth-noise bank (patchy opacities)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Anatomy:
        """Draw a plausible adult anatomy."""
        thorax = float(rng.uniform(0.72, 0.84))
        return cls(
            thorax_half_width=thorax,
            lung_top=float(rng.uniform(-0.80, -0.68)),
            apex_length=float(rng.uniform(0.3, 0.42)),
            dome_right=float(rng.uniform(0.36, 0.48)),
            dome_left_offset=float(rng.uniform(0.02, 0.07)),
            dome_depth=float(rng.uniform(0.12, 0.2)),
            mediastinum_half_width=float(rng.uniform(0.075, 0.1)),
            heart_ctr=float(rng.uniform(0.40, 0.49)),
            heart_center_y=float(rng.uniform(0.2, 0.28)),
            heart_offset_x=float(rng.uniform(0.04, 0.09)),
            body_half_width=thorax + float(rng.uniform(0.1, 0.22)),
            rib_spacing=float(rng.uniform(0.125, 0.15)),
            rib_offset=float(rng.uniform(0.0, 1.0)),
            clavicle_y=float(rng.uniform(-0.82, -0.72)),
            marking_texture=int(rng.integers(0, 1 << 16)),
            blob_texture=int(rng.integers(0, 1 << 16)),
        )


@dataclass(frozen=True)
class Acquisition:
    """Per-image acquisition: positioning, inspiration, exposure and noise."""

    shift_x: float
    shift_y: float
    rotation: float  # radians
    scale: float  # magnification (>1 = patient appears larger)
    inspiration: float  # + = deeper breath (domes lower)
    exposure: float  # attenuation → brightness gain
    gamma: float
    noise_sigma: float  # std of additive noise, in [0, 1] intensity units
    texture_shift: tuple[int, int]  # offset of the texture lookups, in texture pixels

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Acquisition:
        """Draw a plausible acquisition."""
        return cls(
            shift_x=float(rng.normal(0.0, 0.035)),
            shift_y=float(rng.normal(0.0, 0.035)),
            rotation=float(rng.normal(0.0, 0.035)),
            scale=float(rng.uniform(0.92, 1.06)),
            inspiration=float(rng.normal(0.0, 0.035)),
            exposure=float(rng.uniform(1.9, 2.7)),
            gamma=float(rng.uniform(0.85, 1.2)),
            noise_sigma=float(rng.uniform(0.008, 0.03)),
            texture_shift=(int(rng.integers(-3, 4)), int(rng.integers(-3, 4))),
        )


@dataclass
class LungGeometry:
    """Outline of one lung (patient side ``sign``: -1 right, +1 left) in patient coordinates."""

    sign: int
    top: float
    apex_length: float
    lateral: float  # lateral extent of the lung
    medial: float  # medial edge at the top; widens by ``medial_slope`` per unit y
    medial_slope: float
    dome: float  # y of the dome apex
    dome_depth: float

    @property
    def apex_u(self) -> float:
        """|x| of the lung apex (the highest point)."""
        return self.medial + 0.4 * (self.lateral - self.medial)

    def top_at(self, u: np.ndarray | float) -> np.ndarray:
        """Upper lung border y at lateral distance ``u`` = |x| (a dome peaking at the apex)."""
        span = max(self.lateral - self.apex_u, 1e-3)
        return np.asarray(self.top + self.apex_length * ((np.asarray(u) - self.apex_u) / span) ** 2)

    def medial_at(self, y: np.ndarray | float) -> np.ndarray:
        """Medial edge |x| at height ``y``."""
        return np.asarray(self.medial + self.medial_slope * (np.asarray(y) - self.top))

    def dome_at(self, u: np.ndarray | float) -> np.ndarray:
        """Diaphragm y at lateral distance ``u`` = |x|: lowest at the lateral costophrenic angle,
        shallower towards the cardiophrenic angle."""
        peak = self.medial + 0.45 * (self.lateral - self.medial)
        t = (np.asarray(u) - peak) * (1.0 / max(self.lateral - peak, 1e-3))
        # medially (t < 0) the dome is 0.35× as deep: scale t by sqrt(0.35) there
        t = np.where(t > 0, t, t * 0.5916)
        return np.asarray(self.dome + self.dome_depth * t * t)

    def point(self, a: float, b: float) -> tuple[float, float]:
        """Patient (x, y) of lung coordinates ``a`` (0 medial → 1 lateral), ``b`` (0 apex → 1 base)."""
        y = self.top + 0.3 * self.apex_length + b * (self.dome - self.top - 0.3 * self.apex_length)
        med = float(self.medial_at(y))
        return self.sign * (med + a * (self.lateral - med)), float(y)


@dataclass
class Geometry:
    """Resolved geometry of one image: anatomy + acquisition + the findings' geometric changes."""

    right: LungGeometry
    left: LungGeometry
    heart_half_width: float
    heart_half_height: float
    heart_center: tuple[float, float]
    mediastinum_half_width: float
    body_half_width: float

    @classmethod
    def from_anatomy(cls, anatomy: Anatomy, acquisition: Acquisition) -> Geometry:
        """Lungs, heart and mediastinum before any finding is applied."""
        dome_r = anatomy.dome_right + acquisition.inspiration
        lungs = []
        for sign, dome in ((-1, dome_r), (1, dome_r + anatomy.dome_left_offset)):
            lungs.append(
                LungGeometry(
                    sign=sign,
                    top=anatomy.lung_top,
                    apex_length=anatomy.apex_length,
                    lateral=anatomy.thorax_half_width,
                    medial=anatomy.mediastinum_half_width + 0.01,
                    medial_slope=0.03,
                    dome=dome,
                    dome_depth=anatomy.dome_depth,
                )
            )
        geometry = cls(
            right=lungs[0],
            left=lungs[1],
            heart_half_width=0.0,
            heart_half_height=0.0,
            heart_center=(0.0, 0.0),
            mediastinum_half_width=anatomy.mediastinum_half_width,
            body_half_width=anatomy.body_half_width,
        )
        geometry.set_heart(anatomy.heart_ctr, anatomy.heart_offset_x, anatomy.heart_center_y)
        return geometry

    def set_heart(self, ctr: float, offset_x: float, center_y: float) -> None:
        """Place the heart for a cardiothoracic ratio ``ctr`` (width / internal thoracic width)."""
        thoracic_width = self.right.lateral + self.left.lateral
        half_width = 0.5 * ctr * thoracic_width
        self.heart_half_width = half_width
        self.heart_half_height = 0.2 + 0.35 * (half_width - 0.16)
        # the heart extends further to the patient's left: its centre moves left as it grows
        self.heart_center = (offset_x + 0.15 * half_width + 0.3 * (half_width - 0.16), center_y)

    def lung(self, side: str) -> LungGeometry:
        """The lung of the patient's ``right`` or ``left`` side."""
        if side == "right":
            return self.right
        if side == "left":
            return self.left
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
