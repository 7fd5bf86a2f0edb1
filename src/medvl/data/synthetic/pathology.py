"""How each finding changes the image.

Every finding has an optional *geometry* step (applied before the scene is rasterised: a
larger heart, a raised hemidiaphragm) and a *render* step that edits the scene's layers
(extra density, lung-marking gain, rib breaks, image-space overlay). Both are looked up in
``RENDERERS`` (a plain dict, one entry per finding). Severity scales size and contrast so
that mild findings are subtle and severe ones obvious.

Render steps draw randomness only from the ``rng`` they are given (the generator derives
one per finding), so adding or removing one finding never changes how the others look.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from medvl.data.synthetic.anatomy import Anatomy, Geometry
from medvl.data.synthetic.findings import FINDINGS, Finding, device_kinds
from medvl.data.synthetic.scene import RibBreak, Scene, ramp, rib_curve

__all__ = ["RENDERERS", "FindingRenderer", "apply_findings"]

GeometryStep = Callable[[Geometry, Anatomy, Finding], None]
RenderStep = Callable[[Scene, Finding, np.random.Generator], None]

_ZONE_B = {"upper": 0.25, "middle": 0.52, "lower": 0.78}
_F32 = np.float32


@dataclass(frozen=True)
class FindingRenderer:
    """The geometry step (or None) and render step of one finding."""

    geometry: GeometryStep | None
    render: RenderStep | None


def _level(finding: Finding, values: tuple[float, float, float]) -> float:
    """Pick the value for the finding's severity (1, 2, 3) from ``values``."""
    return values[max(finding.severity, 1) - 1]


# ---------------------------------------------------------------------------- cardiomegaly
def _cardiomegaly_geometry(geometry: Geometry, anatomy: Anatomy, finding: Finding) -> None:
    lo = _level(finding, (0.53, 0.585, 0.65))
    hi = _level(finding, (0.56, 0.62, 0.70))
    ctr = lo + (hi - lo) * finding.anchor[0]
    geometry.set_heart(max(ctr, anatomy.heart_ctr + 0.05), anatomy.heart_offset_x, anatomy.heart_center_y + 0.02)


# ---------------------------------------------------------------------------- pleural effusion
def _effusion(scene: Scene, finding: Finding, rng: np.random.Generator) -> None:
    height = _level(finding, (0.10, 0.28, 0.5)) * (0.9 + 0.2 * finding.anchor[1])
    for side in finding.sides:
        lung = scene.lungs[side]
        # meniscus: the fluid climbs the lateral chest wall; mild = only the costophrenic angle
        a = np.clip(lung.a, 0.0, 1.2)
        top = _F32(1.0) - _F32(height) * (_F32(0.15) + _F32(1.1) * a * a)
        fluid = ramp(lung.b - top, 0.06)
        fluid *= ramp(lung.b - _F32(0.2), 0.1)
        scene.extra[lung.window] += _F32(0.4) * fluid * lung.mask  # fluid replaces the displaced air
        scene.marking_gain[lung.window] *= _F32(1.0) - fluid


# ---------------------------------------------------------------------------- pneumothorax
def _pneumothorax(scene: Scene, finding: Finding, rng: np.random.Generator) -> None:
    depth = _level(finding, (0.13, 0.27, 0.48))
    for side in finding.sides:
        lung = scene.lungs[side]
        # distance (in lung fractions) from the lateral wall and from the apex
        rim = np.minimum(_F32(1.0) - lung.a, lung.b * _F32(1.6))
        fade = ramp(_F32(0.85) - lung.b, 0.2)  # apico-lateral, fading towards the base
        region = ramp(_F32(depth) - rim, 0.03) * fade * lung.mask
        line = np.exp(-(((rim - _F32(depth)) / _F32(0.018)) ** 2)) * fade * lung.mask
        scene.marking_gain[lung.window] *= _F32(1.0) - region
        extra = scene.extra[lung.window]
        extra -= _F32(0.04) * region
        extra += _F32(0.16) * line
        if finding.severity == 3:  # the collapsed lung is denser
            extra += _F32(0.07) * (_F32(1.0) - region) * lung.mask


# ---------------------------------------------------------------------------- consolidation
def _consolidation(scene: Scene, finding: Finding, rng: np.random.Generator) -> None:
    amp = _level(finding, (0.13, 0.22, 0.32))
    sa, sb = _level(finding, (0.2, 0.28, 0.38)), _level(finding, (0.12, 0.17, 0.24))
    b0 = _ZONE_B[finding.zone] + 0.08 * (finding.anchor[1] - 0.5)
    a0 = 0.35 + 0.4 * finding.anchor[0]
    for i, side in enumerate(finding.sides):
        lung = scene.lungs[side]
        envelope = np.exp(-(((lung.a - _F32(a0)) / _F32(sa)) ** 2) - (((lung.b - _F32(b0)) / _F32(sb)) ** 2))
        patch = envelope * (_F32(0.45) + _F32(1.1) * scene.texture("blobs", lung, salt=i + 1))
        patch = ramp(patch - _F32(0.45), 0.5) * lung.mask
        scene.extra[lung.window] += _F32(amp) * patch
        scene.marking_gain[lung.window] *= _F32(1.0) - _F32(0.7) * patch


# ---------------------------------------------------------------------------- edema
def _edema(scene: Scene, finding: Finding, rng: np.random.Generator) -> None:
    amp = _level(finding, (0.07, 0.13, 0.2))
    spread = _level(finding, (0.5, 0.65, 0.85))
    for side in ("right", "left"):
        lung = scene.lungs[side]
        haze = np.exp(-((lung.a / _F32(spread)) ** 2) - (((lung.b - _F32(0.55)) / _F32(0.45 * spread + 0.15)) ** 2))
        if finding.severity == 3:  # alveolar fluid spills to the bases
            haze = np.maximum(haze, _F32(0.6) * ramp(lung.b - _F32(0.6), 0.3))
        haze *= _F32(0.75) + _F32(0.5) * scene.texture("blobs", lung, salt=5)
        scene.extra[lung.window] += _F32(amp) * haze * lung.mask
        # indistinct, engorged vessels: stronger markings near the hila
        scene.marking_gain[lung.window] *= _F32(1.0) + _F32(0.6 * amp / 0.2) * haze


# ---------------------------------------------------------------------------- atelectasis
def _atelectasis_geometry(geometry: Geometry, anatomy: Anatomy, finding: Finding) -> None:
    if finding.severity == 3:  # volume loss: the hemidiaphragm rises
        for side in finding.sides:
            geometry.lung(side).dome -= 0.08


def _atelectasis(scene: Scene, finding: Finding, rng: np.random.Generator) -> None:
    for side in finding.sides:
        lung = scene.lungs[side]
        if finding.severity == 3:
            wedge = ramp(lung.b - _F32(0.62) - _F32(0.25) * lung.a, 0.08) * lung.mask
            scene.extra[lung.window] += _F32(0.26) * wedge
            scene.marking_gain[lung.window] *= _F32(1.0) - wedge
            continue
        n_bands = finding.severity  # 1 thin band (mild) or 2 thicker bands (moderate)
        thickness = _level(finding, (0.016, 0.024, 0.03))
        amp = _level(finding, (0.15, 0.2, 0.2))
        span = lung.geometry.dome - lung.geometry.top
        for k in range(n_bands):
            b0 = 0.74 + 0.08 * k + 0.05 * (finding.anchor[0] - 0.5)
            tilt = 0.08 * (finding.anchor[1] - 0.5) + 0.05 * rng.standard_normal()
            centre = _F32(b0) + _F32(tilt) * (lung.a - _F32(0.5))
            band = ramp(_F32(thickness) - np.abs(lung.b - centre) * _F32(span), 0.01)
            band *= ramp(lung.a - _F32(0.15), 0.1) * ramp(_F32(0.9) - lung.a, 0.1) * lung.mask
            scene.extra[lung.window] += _F32(amp) * band


# ---------------------------------------------------------------------------- nodule and mass
def _round_opacity(scene: Scene, finding: Finding, radius: float, amp: float, lobulation: float) -> None:
    side = finding.sides[0]
    lung = scene.lungs[side].geometry
    b = _ZONE_B[finding.zone] + 0.12 * (finding.anchor[1] - 0.5)
    a = 0.3 + 0.45 * finding.anchor[0]
    cx, cy = lung.point(a, b)
    reach = radius * 1.5 + 0.02
    window = scene.window(cx - reach, cx + reach, cy - reach, cy + reach)
    dx, dy = scene.x[window] - _F32(cx), scene.y[window] - _F32(cy)
    r = np.sqrt(dx * dx + dy * dy)
    if lobulation:
        theta = np.arctan2(dy, dx)
        phase = 6.283 * finding.anchor[1]
        radius_map = _F32(radius) * (_F32(1.0) + _F32(lobulation) * (np.cos(3 * theta + _F32(phase))
                                                                       + _F32(0.6) * np.cos(5 * theta)))
    else:
        radius_map = _F32(radius)
    blob = ramp(radius_map - r, 0.012)
    scene.extra[window] += _F32(amp) * blob
    scene.marking_gain[window] *= _F32(1.0) - blob


def _nodule(scene: Scene, finding: Finding, rng: np.random.Generator) -> None:
    _round_opacity(scene, finding, _level(finding, (0.022, 0.03, 0.04)), _level(finding, (0.2, 0.26, 0.3)), 0.0)


def _mass(scene: Scene, finding: Finding, rng: np.random.Generator) -> None:
    _round_opacity(scene, finding, _level(finding, (0.065, 0.09, 0.125)), _level(finding, (0.24, 0.3, 0.34)), 0.07)


# ---------------------------------------------------------------------------- support devices
def _splat_curve(scene: Scene, points: np.ndarray, amp: float) -> None:
    """Draw a radio-opaque tube through patient-space control ``points`` (N, 2) into the overlay.

    The polyline is sampled ≈ 2.5 times per pixel of length, splatted bilinearly into a window
    around it and widened to ≈ 2 px with a [1, 2, 1] / 4 blur along both axes.
    """
    seg = np.diff(points, axis=0)
    lengths = np.sqrt((seg * seg).sum(axis=1))
    half = 0.5 * (scene.size - 1)
    counts = np.maximum((lengths * half * scene.acquisition.scale * 2.5).astype(int), 2)
    t = np.concatenate([np.arange(n) / n for n in counts])[:, None]
    starts = np.repeat(points[:-1], counts, axis=0)
    pts = starts + t * np.repeat(seg, counts, axis=0)
    cols, rows = scene.to_pixels(pts[:, 0], pts[:, 1])
    size = scene.size
    inside = (cols >= 1) & (cols < size - 2) & (rows >= 1) & (rows < size - 2)
    if not inside.any():
        return
    cols, rows = cols[inside], rows[inside]
    c0, r0 = np.floor(cols).astype(np.int64), np.floor(rows).astype(np.int64)
    top, left = int(r0.min()) - 1, int(c0.min()) - 1
    height, width = int(r0.max()) - top + 3, int(c0.max()) - left + 3
    fc, fr = cols - c0, rows - r0
    lr, lc = r0 - top, c0 - left
    acc = np.zeros(height * width, dtype=np.float64)
    for dc, dr, w in ((0, 0, (1 - fc) * (1 - fr)), (1, 0, fc * (1 - fr)), (0, 1, (1 - fc) * fr), (1, 1, fc * fr)):
        acc += np.bincount((lr + dr) * width + (lc + dc), weights=w, minlength=height * width)
    line = acc.reshape(height, width) / 2.5
    line[:, 1:-1] = 0.25 * line[:, :-2] + 0.5 * line[:, 1:-1] + 0.25 * line[:, 2:]
    line[1:-1, :] = 0.25 * line[:-2, :] + 0.5 * line[1:-1, :] + 0.25 * line[2:, :]
    overlay = scene.ensure_overlay()
    overlay[top : top + height, left : left + width] += _F32(amp) * np.clip(line * 1.6, 0.0, 1.0).astype(np.float32)


def _bezier(p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float], n: int = 12) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    a, b, c = np.asarray(p0), np.asarray(p1), np.asarray(p2)
    return np.asarray((1 - t) ** 2 * a + 2 * (1 - t) * t * b + t**2 * c)


def _support_devices(scene: Scene, finding: Finding, rng: np.random.Generator) -> None:
    g = scene.geometry
    kinds = set(device_kinds(finding))
    ett, cvc, enteric = "endotracheal tube" in kinds, "central venous catheter" in kinds, "enteric tube" in kinds
    ecg, pacer = "ECG leads" in kinds, "pacemaker" in kinds
    if ett:  # endotracheal tube down the trachea, tip above the carina
        tip = -0.42 + 0.08 * rng.standard_normal()
        _splat_curve(scene, np.array([[0.01, -1.1], [0.0, -0.8], [0.005, tip]]), 0.45)
    if cvc:  # internal jugular central venous catheter, tip in the SVC
        s = -1.0 if rng.random() < 0.7 else 1.0
        path = _bezier((s * 0.32, -1.1), (s * 0.12, -0.75), (s * 0.07, -0.5))
        tail = np.array([[s * 0.07, -0.5], [s * 0.06, -0.2 + 0.06 * rng.standard_normal()]])
        _splat_curve(scene, np.concatenate([path, tail[1:]]), 0.38)
    if enteric:  # enteric tube down the oesophagus, curving into the stomach
        path = np.concatenate([
            np.array([[0.02, -1.1], [0.03, -0.3], [0.04, g.left.dome - 0.02]]),
            _bezier((0.04, g.left.dome - 0.02), (0.1, g.left.dome + 0.2), (0.32, g.left.dome + 0.16), 8)[1:],
        ])
        _splat_curve(scene, path, 0.4)
    if ecg:  # electrode buttons with their leads running off the film
        for _ in range(int(rng.integers(2, 5))):
            ex, ey = float(rng.uniform(-0.75, 0.75)), float(rng.uniform(-0.85, -0.45))
            window = scene.window(ex - 0.06, ex + 0.06, ey - 0.06, ey + 0.06)
            dx, dy = scene.x[window] - _F32(ex), scene.y[window] - _F32(ey)
            r = np.sqrt(dx * dx + dy * dy)
            scene.extra[window] += ramp(_F32(0.035) - r, 0.015) * _F32(0.5) + ramp(_F32(0.012) - r, 0.01) * _F32(0.3)
            end = (ex + float(rng.uniform(-0.4, 0.4)), -1.15)
            _splat_curve(scene, _bezier((ex, ey), (ex + float(rng.uniform(-0.3, 0.3)), ey - 0.2), end, 10), 0.25)
    if pacer:  # left pectoral generator with a lead into the right ventricle
        px, py = 0.5, -0.62
        window = scene.window(px - 0.12, px + 0.12, py - 0.1, py + 0.1)
        box = ramp(_F32(0.09) - np.abs(scene.x[window] - _F32(px)), 0.01)
        box *= ramp(_F32(0.06) - np.abs(scene.y[window] - _F32(py)), 0.01)
        scene.extra[window] += _F32(0.8) * box
        hx, hy = g.heart_center
        lead = np.concatenate([_bezier((px - 0.05, py), (0.1, -0.75), (0.0, -0.35), 10),
                               _bezier((0.0, -0.35), (-0.05, hy - 0.1), (hx + 0.05, hy + 0.12), 10)[1:]])
        _splat_curve(scene, lead, 0.45)


# ---------------------------------------------------------------------------- rib fracture
def _rib_fracture(scene: Scene, finding: Finding, rng: np.random.Generator) -> None:
    side = finding.sides[0]
    lung = scene.lungs[side].geometry
    b = _ZONE_B[finding.zone]
    a = 0.72 + 0.2 * finding.anchor[0]  # lateral arcs, where fractures are seen on a frontal film
    px, py = lung.point(a, b)
    u0 = abs(px)
    spacing = scene.anatomy.rib_spacing
    phase = (py - float(rib_curve(u0))) / spacing - scene.anatomy.rib_offset
    index = round(phase)
    gap = _level(finding, (0.007, 0.012, 0.018))
    step = _level(finding, (0.0, 0.12, 0.3))
    scene.rib_breaks.append(RibBreak(side=side, index=index, u0=u0, gap=gap, step=step))
    if finding.severity >= 2:  # a little extrapleural haematoma / callus at the break
        ry = (index + scene.anatomy.rib_offset) * spacing + float(rib_curve(u0))
        window = scene.window(px - 0.08, px + 0.08, ry - 0.06, ry + 0.06)
        dx, dy = (scene.x[window] - _F32(px)) * _F32(1 / 1.6), scene.y[window] - _F32(ry)
        r = np.sqrt(dx * dx + dy * dy)
        scene.extra[window] += _F32(0.05 * finding.severity) * ramp(_F32(0.03) - r, 0.02)


RENDERERS: dict[str, FindingRenderer] = {
    "cardiomegaly": FindingRenderer(_cardiomegaly_geometry, None),
    "pleural_effusion": FindingRenderer(None, _effusion),
    "pneumothorax": FindingRenderer(None, _pneumothorax),
    "consolidation": FindingRenderer(None, _consolidation),
    "edema": FindingRenderer(None, _edema),
    "atelectasis": FindingRenderer(_atelectasis_geometry, _atelectasis),
    "nodule": FindingRenderer(None, _nodule),
    "mass": FindingRenderer(None, _mass),
    "support_devices": FindingRenderer(None, _support_devices),
    "rib_fracture": FindingRenderer(None, _rib_fracture),
}
assert set(RENDERERS) == set(FINDINGS), "every finding needs a renderer"


def apply_findings(
    anatomy: Anatomy,
    geometry: Geometry,
    findings: tuple[Finding, ...],
    make_scene: Callable[[Geometry], Scene],
    finding_rng: Callable[[Finding], np.random.Generator],
) -> Scene:
    """Apply the findings' geometry steps, rasterise the scene, then apply their render steps."""
    for finding in findings:
        step = RENDERERS[finding.name].geometry
        if step is not None:
            step(geometry, anatomy, finding)
    scene = make_scene(geometry)
    for finding in findings:
        render = RENDERERS[finding.name].render
        if render is not None:
            render(scene, finding, finding_rng(finding))
    return scene
