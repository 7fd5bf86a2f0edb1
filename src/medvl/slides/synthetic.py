"""Synthetic prostate biopsies: pyramidal TIFF slides whose texture follows the ISUP grade, with reports.

A smoke-test and teaching set for the slide pipeline (tile → embed → import → sweep), **not** a
pathology benchmark. Each slide is an H&E-coloured biopsy: one or two elongated tissue cores
with wavy borders on white glass (plus grey dust specks that tissue detection must ignore). The
tissue holds pink stroma, glands (a white lumen inside a ring of purple epithelium) and nuclei;
with the grade, glands get smaller, denser and lose their lumens, solid sheets of dark, crowded,
larger nuclei replace them (ISUP 4–5), as Gleason patterns 3 → 4 → 5 do. Reports have a
"Microscopy" and a "Conclusion" section (the Balancing Act's report form) with the Gleason score
and ISUP grade in varied wording.

Files (``generate_prostate_set``)::

    <out>/slides/<slide_id>.tif       pyramidal tiled TIFF (deflate), levels ×1 ×2 ×4, µm/px in the
                                      resolution tags (OpenSlide: generic-tiff, openslide.mpp-x)
    <out>/reports.json                {"<slide_id>": {"label": grade, "report": text, "patient_id": …}}
    <out>/splits/val_fold{k}.json, testset.json      folds by patient, stratified by grade
    <out>/truth/<slide_id>.png         ground-truth tissue mask at level 0 (for tests)
    <out>/patch_encoder/               a seeded random tiny CNN (BatchNorm statistics set on synthetic
                                      patches) saved as a medvl model: a stand-in patch encoder, as no
                                      pathology encoder can be downloaded offline
    <out>/synth_summary.json

Same seed ⇒ identical slides, reports and splits.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "GRADE_NAMES",
    "SyntheticSlideConfig",
    "generate_prostate_set",
    "render_slide",
    "synthetic_report",
    "write_patch_encoder",
    "write_pyramidal_tiff",
]

GRADE_NAMES = ("benign", "ISUP 1", "ISUP 2", "ISUP 3", "ISUP 4", "ISUP 5")

#: Per ISUP grade 0–5: gland radius (px at level 0), glands per 10⁴ px² of non-sheet tissue, lumen
#: share of the gland radius, solid-sheet share of the tissue, share of the epithelium covered by
#: nuclei, nucleus radius (px) and darkness (0–1).
_GRADE_TEXTURE: dict[str, tuple[float, ...]] = {
    "gland_radius": (26.0, 18.0, 14.0, 11.0, 9.0, 8.0),
    "gland_density": (0.6, 1.3, 1.9, 2.6, 2.2, 0.8),
    "lumen": (0.6, 0.55, 0.45, 0.3, 0.15, 0.0),
    "sheet": (0.0, 0.0, 0.05, 0.15, 0.45, 0.8),
    "nuclei": (0.12, 0.15, 0.19, 0.25, 0.33, 0.42),
    "nucleus_radius": (2.0, 2.0, 2.2, 2.6, 3.0, 3.4),
    "darkness": (0.55, 0.6, 0.65, 0.72, 0.8, 0.9),
}


@dataclass(frozen=True)
class SyntheticSlideConfig:
    """Geometry of one synthetic slide: level-0 size in pixels, µm/px, pyramid levels, TIFF tile size."""

    width: int = 1536
    height: int = 1024
    mpp: float = 0.5
    levels: int = 3
    tile: int = 256


def _smooth_noise(shape: tuple[int, int], scale: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: coarse white noise, blurred and zoomed to ``shape``."""
    from scipy import ndimage

    coarse = rng.normal(size=(shape[0] // scale + 3, shape[1] // scale + 3))
    coarse = ndimage.gaussian_filter(coarse, 1.0)
    coarse /= max(float(np.abs(coarse).max()), 1e-6)
    zoomed = ndimage.zoom(coarse, scale, order=1)
    return zoomed[: shape[0], : shape[1]]


def _tissue(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One or two elongated biopsy cores with wavy borders."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wobble = _smooth_noise(shape, 48, rng)
    mask = np.zeros(shape, dtype=bool)
    for _ in range(int(rng.integers(1, 3))):
        cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        a, b = rng.uniform(0.28, 0.42) * w, rng.uniform(0.12, 0.2) * h
        angle = rng.uniform(-0.35, 0.35)
        dx, dy = xx - cx, yy - cy
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        mask |= (u / a) ** 2 + (v / b) ** 2 + 0.25 * wobble < 1.0
    return mask


def _disk(radius: float) -> np.ndarray:
    r = max(1, round(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return np.asarray(xx**2 + yy**2 <= radius**2 + 0.5)


def _points(region: np.ndarray, per_pixel: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson points inside ``region`` (bool image) with ``per_pixel`` intensity."""
    return region & (rng.random(region.shape, dtype=np.float32) < per_pixel)


def render_slide(grade: int, seed: int, config: SyntheticSlideConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (h, w, 3) level-0 image of a biopsy of ISUP ``grade`` and its tissue mask (h, w)."""
    from scipy import ndimage

    if not 0 <= grade < len(GRADE_NAMES):
        raise ValueError(f"grade must lie in [0, {len(GRADE_NAMES)}), got {grade}")
    cfg = config or SyntheticSlideConfig()
    rng = np.random.default_rng(np.random.SeedSequence([seed, grade, 0x5117]))
    shape = (cfg.height, cfg.width)
    t = {name: values[grade] for name, values in _GRADE_TEXTURE.items()}
    tissue = _tissue(shape, rng)
    sheet_noise = _smooth_noise(shape, 40, rng)
    if t["sheet"] > 0:
        cut = np.quantile(sheet_noise[tissue], 1.0 - t["sheet"]) if tissue.any() else np.inf
        sheet = tissue & (sheet_noise >= cut)
    else:
        sheet = np.zeros(shape, dtype=bool)
    # glands: nearest-centre distance with a per-gland radius (radius jittered ±25 %)
    centres = _points(tissue & ~sheet, t["gland_density"] / 1e4, rng)
    epithelium = np.zeros(shape, dtype=bool)
    lumen = np.zeros(shape, dtype=bool)
    if centres.any():
        distance, nearest = ndimage.distance_transform_edt(~centres, return_indices=True)
        centre_id = np.zeros(shape, dtype=np.int32)
        centre_id[centres] = np.arange(int(centres.sum()), dtype=np.int32)
        radii = rng.uniform(0.75, 1.25, size=int(centres.sum())).astype(np.float32) * t["gland_radius"]
        radius = radii[centre_id[nearest[0], nearest[1]]]  # each pixel: the radius of its nearest gland
        gland = (distance < radius) & tissue
        lumen = gland & (distance < radius * t["lumen"])
        epithelium = gland & ~lumen
    epithelium |= sheet
    nuclei_points = _points(epithelium, t["nuclei"] / (np.pi * t["nucleus_radius"] ** 2), rng)
    nuclei_points |= _points(tissue & ~epithelium & ~lumen, 0.0008, rng)  # stromal fibroblasts
    nuclei = ndimage.binary_dilation(nuclei_points, structure=_disk(t["nucleus_radius"])) & tissue & ~lumen
    # colours (H&E-like), shaded by low-frequency stain variation and pixel noise
    stain = 1.0 + 0.06 * _smooth_noise(shape, 64, rng)[..., None]
    image = np.empty((*shape, 3), dtype=np.float32)
    image[:] = (243.0, 242.0, 244.0)
    image[tissue] = (232.0, 164.0, 196.0)
    image[epithelium] = (206.0, 142.0, 198.0)
    image[lumen] = (246.0, 236.0, 244.0)
    dark = t["darkness"]
    image[nuclei] = (150.0 - 90.0 * dark, 90.0 - 60.0 * dark, 170.0 - 60.0 * dark)
    image[tissue] *= stain[tissue]
    dust = _points(~tissue, 0.00002, rng)  # grey specks on the glass: not tissue
    dust = ndimage.binary_dilation(dust, structure=_disk(2.5))
    image[dust] = (120.0, 120.0, 122.0)
    image += rng.normal(0.0, 4.0, size=image.shape).astype(np.float32)
    image = ndimage.gaussian_filter(image, sigma=(0.6, 0.6, 0.0))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), tissue


def write_pyramidal_tiff(path: str | os.PathLike[str], image: np.ndarray, mpp: float, levels: int = 3,
                         tile: int = 256) -> Path:
    """Write ``image`` (h, w, 3) uint8 as a tiled pyramidal TIFF (levels ×1, ×2, …, 2×2 mean pooling),
    deflate-compressed, with µm/px as resolution tags in pixels per centimetre (OpenSlide reads them
    as ``openslide.mpp-x``). Written to a temporary name and renamed."""
    import tifffile

    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    level = image
    with tifffile.TiffWriter(tmp) as writer:
        for index in range(levels):
            per_cm = 1e4 / (mpp * 2**index)
            writer.write(level, tile=(tile, tile), photometric="rgb", compression="zlib",
                         resolution=(per_cm, per_cm), resolutionunit="CENTIMETER",
                         subfiletype=0 if index == 0 else 1, metadata=None)
            h, w = (level.shape[0] // 2) * 2, (level.shape[1] // 2) * 2
            if h < 2 or w < 2:
                break
            level = level[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    os.replace(tmp, target)
    return target


_ARCHITECTURE = {
    0: ["benign prostatic glands with preserved basal cell layer", "normal prostate tissue with well-spaced glands",
        "benign glands with papillary infoldings and corpora amylacea"],
    1: ["small well-formed glands infiltrating between benign glands", "discrete, well-formed small acini",
        "uniform small glands with prominent nucleoli"],
    2: ["predominantly well-formed glands with a minor component of poorly formed glands",
        "mostly discrete glands, focally fused and poorly formed glands"],
    3: ["predominantly poorly formed and fused glands with a minor component of well-formed glands",
        "fused glands and poorly formed glands, some well-formed glands remaining"],
    4: ["cribriform and fused glands", "poorly formed and cribriform glands throughout the core",
        "solid nests and cribriform structures"],
    5: ["solid sheets of tumour cells without gland formation", "single cells and solid sheets with comedonecrosis",
        "sheets of atypical cells, lacking glandular differentiation"],
}
_GLEASON = {1: ["3+3=6"], 2: ["3+4=7"], 3: ["4+3=7"], 4: ["4+4=8", "3+5=8", "5+3=8"], 5: ["4+5=9", "5+4=9", "5+5=10"]}


def synthetic_report(grade: int, rng: np.random.Generator) -> str:
    """A pathology report ("Microscopy: … Conclusion: …") for a biopsy of ISUP ``grade``."""
    site = rng.choice(["left apex", "right apex", "left base", "right base", "left mid", "right mid"])
    length = round(float(rng.uniform(6, 18)), 1)
    architecture = str(rng.choice(_ARCHITECTURE[grade]))
    if grade == 0:
        micro = f"Microscopy: prostate needle biopsy, {site}, core length {length} mm. {architecture.capitalize()}."
        extra = str(rng.choice(["", " Focal chronic inflammation.", " No atypia."]))
        conclusion = str(rng.choice(["Benign prostate tissue. No malignancy.",
                                     "No evidence of carcinoma (benign).", "Benign, no tumour identified."]))
        return f"{micro}{extra} Conclusion: {conclusion}"
    gleason = str(rng.choice(_GLEASON[grade]))
    share = int(rng.integers(5, 95))
    micro = (f"Microscopy: prostate needle biopsy, {site}, core length {length} mm. Adenocarcinoma with "
             f"{architecture}, involving about {share}% of the core.")
    extra = str(rng.choice(["", " Perineural invasion present.", " No perineural invasion."]))
    conclusion = str(rng.choice([f"Acinar adenocarcinoma, Gleason score {gleason}, ISUP grade group {grade}.",
                                 f"Adenocarcinoma of the prostate, Gleason {gleason} (ISUP grade {grade}).",
                                 f"Prostate cancer, ISUP {grade} (Gleason {gleason})."]))
    return f"{micro}{extra} Conclusion: {conclusion}"


def _assign_splits(patients: list[str], grades: list[int], n_folds: int, test_fraction: float,
                   seed: int) -> tuple[dict[str, int], set[str]]:
    """Fold per patient (stratified by grade, round-robin after a seeded shuffle) and the test patients."""
    rng = np.random.default_rng(seed + 17)
    by_grade: dict[int, list[str]] = {}
    for patient, grade in zip(patients, grades, strict=True):  # patients are unique
        by_grade.setdefault(grade, []).append(patient)
    folds: dict[str, int] = {}
    test: set[str] = set()
    position = 0
    for grade in sorted(by_grade):
        group = list(by_grade[grade])
        rng.shuffle(group)
        n_test = round(len(group) * test_fraction)
        test.update(group[:n_test])
        for patient in group[n_test:]:
            folds[patient] = position % n_folds
            position += 1
    return folds, test


def write_patch_encoder(directory: Path, seed: int, cfg: SyntheticSlideConfig) -> None:
    """A seeded random tiny CNN whose BatchNorm statistics are set on patches of synthetic slides.

    Random convolutions keep texture and colour information but shrink its scale layer by layer;
    estimating each BatchNorm layer's mean and variance on 512 patches of 32 px at 1 µm/px (one
    slide per grade, the pipeline's tiling) puts the features back on a unit scale — a data-dependent
    initialisation, no training and no labels.
    """
    import torch
    from torch import nn

    from medvl.config.model import ModelConfig
    from medvl.models import build_model

    torch.manual_seed(seed)
    model_cfg = ModelConfig.model_validate({
        "embed_dim": 64, "text": None, "vision_projection": {"kind": "identity"},
        "vision": {"kind": "tiny_cnn", "in_channels": 3, "widths": [16, 32, 64]},
    })
    model = build_model(model_cfg)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB4]))
    patches = []
    for grade in range(len(GRADE_NAMES)):
        image, tissue = render_slide(grade, seed=10_000 + seed * 7 + grade, config=cfg)
        half = image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2].reshape(
            image.shape[0] // 2, 2, image.shape[1] // 2, 2, 3).mean(axis=(1, 3))  # 1 µm/px
        ys, xs = np.nonzero(tissue[::2, ::2][: half.shape[0] - 32, : half.shape[1] - 32])
        for k in rng.choice(len(ys), size=min(len(ys), 512 // len(GRADE_NAMES) + 1), replace=False):
            patches.append(half[ys[k]:ys[k] + 32, xs[k]:xs[k] + 32])
    pixels = (torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    model.vision.train()
    with torch.no_grad():
        for chunk in pixels.split(64):
            model.vision(chunk)
    model.eval()
    model.save_pretrained(directory)


def generate_prostate_set(
    out: str | os.PathLike[str],
    n: int = 72,
    seed: int = 0,
    *,
    n_folds: int = 5,
    test_fraction: float = 1 / 6,
    config: SyntheticSlideConfig | None = None,
    overwrite: bool = False,
    log: Any = None,
) -> dict[str, Any]:
    """Write ``n`` synthetic biopsies with reports, folds and a patch encoder under ``out`` (see above)."""
    from PIL import Image

    from medvl.utils.io import atomic_write_json
    from medvl.utils.rundir import prepare_run_dir

    if n < n_folds * 2:
        raise ValueError(f"n = {n} is too small for {n_folds} folds")
    cfg = config or SyntheticSlideConfig()
    root = prepare_run_dir(out, overwrite=overwrite)
    for sub in ("slides", "splits", "truth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9E0]))
    grades = [i % len(GRADE_NAMES) for i in range(n)]
    rng.shuffle(grades)
    ids = [f"biopsy{i:04d}" for i in range(n)]
    # about one patient in six has two biopsies (of neighbouring grades or the same grade)
    patients: list[str] = []
    for i in range(n):
        if i > 0 and rng.random() < 0.17 and patients[-1] == f"patient{i - 1:04d}" and abs(grades[i] - grades[i - 1]) <= 1:
            patients.append(patients[-1])
        else:
            patients.append(f"patient{i:04d}")
    reports: dict[str, dict[str, Any]] = {}
    for i, (slide_id, grade, patient) in enumerate(zip(ids, grades, patients, strict=True)):
        image, tissue = render_slide(grade, seed * 100_003 + i, cfg)
        write_pyramidal_tiff(root / "slides" / f"{slide_id}.tif", image, cfg.mpp, cfg.levels, cfg.tile)
        Image.fromarray(tissue.astype(np.uint8) * 255).save(root / "truth" / f"{slide_id}.png")
        report = synthetic_report(grade, np.random.default_rng(np.random.SeedSequence([seed, i, 0x2E9])))
        reports[slide_id] = {"label": grade, "report": report, "patient_id": patient}
        if log is not None and (i + 1) % 12 == 0:
            log(f"  {i + 1}/{n} slides")
    patient_grade = {p: g for p, g in zip(patients, grades, strict=True)}
    unique = sorted(patient_grade)
    folds, test = _assign_splits(unique, [patient_grade[p] for p in unique], n_folds, test_fraction, seed)
    atomic_write_json(root / "reports.json", reports)
    for k in range(n_folds):
        atomic_write_json(root / "splits" / f"val_fold{k}.json",
                          {s: reports[s] for s in ids if reports[s]["patient_id"] in folds and
                           folds[reports[s]["patient_id"]] == k})
        atomic_write_json(root / "splits" / f"train_fold{k}.json",
                          {s: reports[s] for s in ids if reports[s]["patient_id"] in folds and
                           folds[reports[s]["patient_id"]] != k})
    atomic_write_json(root / "splits" / "testset.json", {s: reports[s] for s in ids if reports[s]["patient_id"] in test})
    write_patch_encoder(root / "patch_encoder", seed, cfg)
    summary = {
        "n_slides": n, "n_patients": len(unique), "seed": seed, "config": asdict(cfg),
        "grades": {GRADE_NAMES[g]: grades.count(g) for g in range(len(GRADE_NAMES))},
        "n_test": sum(reports[s]["patient_id"] in test for s in ids), "n_folds": n_folds,
    }
    atomic_write_json(root / "synth_summary.json", summary)
    return summary
