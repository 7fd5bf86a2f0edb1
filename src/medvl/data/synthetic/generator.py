"""The synthetic chest-radiograph dataset: cases, images, records and the written dataset.

Determinism: every random draw comes from a ``numpy.random.Generator`` seeded by
``(seed, stream, patient[, visit[, finding]])``. Record ``i`` is visit ``v`` of patient ``p``
by a fixed plan that depends only on the seed, so an image does not depend on ``n``, on batch
or worker count, or on which other findings are present (each finding draws from its own
stream). Same seed → byte-identical PNGs and manifest.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from medvl.config import StrictModel
from medvl.data.synthetic.anatomy import Acquisition, Anatomy, Geometry
from medvl.data.synthetic.findings import (
    BASE_FINDINGS,
    FINDINGS,
    NOVEL_FINDINGS,
    SEVERITY_GRADES,
    Finding,
    PatientProfile,
    overall_severity_grade,
    sample_patient_profile,
    sample_visit_findings,
)
from medvl.data.synthetic.pathology import apply_findings
from medvl.data.synthetic.png import encode_png
from medvl.data.synthetic.reports import Report, write_report
from medvl.data.synthetic.scene import Scene
from medvl.data.synthetic.textures import texture_bank

__all__ = [
    "GENERATOR_VERSION",
    "SOURCE",
    "SynthConfig",
    "SyntheticCase",
    "build_records",
    "encode_png",
    "generate_dataset",
    "plan_records",
    "render_case",
    "sample_case",
    "summarise",
    "synthetic_tasks",
]

#: Bumped whenever the same seed would produce different output.
GENERATOR_VERSION = 1
SOURCE = "synthetic-cxr"
MANIFEST_NAME = "manifest.parquet"
SUMMARY_NAME = "synth_summary.json"
IMAGE_DIR = "images"

# RNG stream tags
_VISITS, _PROFILE, _ANATOMY, _ACQUISITION, _VISIT_FINDINGS, _FINDING, _NOISE, _REPORT = range(8)
_MAX_VISITS = 6


class SynthConfig(StrictModel):
    """Options of ``medvl data synth`` (and of ``generate_dataset``)."""

    n: int = Field(default=2000, ge=1, description="number of images (records)")
    seed: int = Field(default=0, ge=0, description="dataset seed")
    size: int = Field(default=128, ge=32, le=2048, description="image side in pixels")
    mean_visits: float = Field(default=2.5, ge=1.0, le=float(_MAX_VISITS), description="mean images per patient")
    png_compress_level: int = Field(default=1, ge=0, le=9, description="zlib level of the PNGs (1: fast)")
    workers: int = Field(default=1, ge=1, description="processes rendering images (output does not depend on it)")
    test_fraction: float = Field(default=0.2, ge=0.0, lt=1.0, description="share of images (whole patients) held out as test")
    val_fraction: float = Field(default=0.0, ge=0.0, lt=1.0, description="share of images (whole patients) held out as val")
    n_folds: int = Field(default=5, ge=0, description="cross-validation folds over the train patients (0: none; else >= 2)")


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, GENERATOR_VERSION, *keys])


def plan_records(n: int, seed: int, mean_visits: float = 2.5) -> list[tuple[int, int]]:
    """``(patient, visit)`` of records ``0..n-1``; a prefix of the plan for any larger ``n``."""
    plan: list[tuple[int, int]] = []
    patient = 0
    while len(plan) < n:
        visits = min(1 + int(_rng(seed, _VISITS, patient).poisson(mean_visits - 1.0)), _MAX_VISITS)
        plan.extend((patient, v) for v in range(visits))
        patient += 1
    return plan[:n]


@dataclass(frozen=True)
class SyntheticCase:
    """Everything about one record except its pixels."""

    seed: int
    patient: int
    visit: int
    profile: PatientProfile
    anatomy: Anatomy
    acquisition: Acquisition
    findings: tuple[Finding, ...]
    report: Report

    @property
    def record_id(self) -> str:
        return f"p{self.patient:06d}_v{self.visit}"

    @property
    def group(self) -> str:
        return f"p{self.patient:06d}"

    @property
    def label_vector(self) -> list[float]:
        """Image-level ground truth, 0/1 per finding in ``FINDINGS`` order."""
        names = {f.name for f in self.findings}
        return [1.0 if name in names else 0.0 for name in FINDINGS]

    @property
    def grade(self) -> int:
        """Overall severity grade 0–5."""
        return overall_severity_grade(self.findings)


@lru_cache(maxsize=512)
def _patient(seed: int, patient: int) -> tuple[PatientProfile, Anatomy]:
    """A patient's latent profile and anatomy (pure function of its arguments; cached because a
    patient's visits are consecutive records)."""
    return sample_patient_profile(_rng(seed, _PROFILE, patient)), Anatomy.sample(_rng(seed, _ANATOMY, patient))


def sample_case(seed: int, patient: int, visit: int, findings: Sequence[Finding] | None = None) -> SyntheticCase:
    """Draw case ``(patient, visit)``; ``findings`` overrides the sampled findings (for tests and
    illustrations: the same patient and acquisition rendered with other findings)."""
    profile, anatomy = _patient(seed, patient)
    acquisition = Acquisition.sample(_rng(seed, _ACQUISITION, patient, visit))
    if findings is None:
        chosen = sample_visit_findings(profile, _rng(seed, _VISIT_FINDINGS, patient, visit))
    else:
        order = {name: i for i, name in enumerate(FINDINGS)}
        chosen = tuple(sorted(findings, key=lambda f: order[f.name]))
        if len({f.name for f in chosen}) != len(chosen):
            raise ValueError(f"a finding appears twice in {[f.name for f in chosen]}")
    report = write_report(chosen, _rng(seed, _REPORT, patient, visit))
    return SyntheticCase(seed, patient, visit, profile, anatomy, acquisition, chosen, report)


def render_case(case: SyntheticCase, size: int) -> np.ndarray:
    """The radiograph of ``case``: (size, size) uint8, 0 = black (air)."""
    bank = texture_bank(min(size, 256))
    geometry = Geometry.from_anatomy(case.anatomy, case.acquisition)

    def make_scene(g: Geometry) -> Scene:
        return Scene(case.anatomy, case.acquisition, g, size, bank)

    def finding_rng(f: Finding) -> np.random.Generator:
        return _rng(case.seed, _FINDING, case.patient, case.visit, FINDINGS.index(f.name))

    scene = apply_findings(case.anatomy, geometry, case.findings, make_scene, finding_rng)
    return scene.compose(_rng(case.seed, _NOISE, case.patient, case.visit))


def _record(case: SyntheticCase, image_path: str) -> dict[str, Any]:
    report = case.report
    return {
        "id": case.record_id,
        "image": image_path,
        "image_type": "image",
        "texts": report.texts,
        "labels.findings": case.label_vector,
        "labels.severity": case.grade,
        "text_labels.findings": report.sentence_labels(),
        "group": case.group,
        "split": "",
        "fold": -1,
        "source": SOURCE,
        "report": report.text,
        "report_labels.findings": report.report_labels(),
        "report_status.findings": report.report_status(),
        "text_status.findings": report.sentence_status(),
        "findings_detail": json.dumps([f.as_dict() for f in case.findings]),
        "visit": case.visit,
        "syndrome": case.profile.syndrome,
    }


def _render_chunk(args: tuple[int, list[tuple[int, int]], int, int, str | None]) -> list[dict[str, Any]]:
    """Sample, render and (when ``image_dir`` is set) write the PNGs of one chunk; return records."""
    seed, plan, size, compress_level, image_dir = args
    rows = []
    for patient, visit in plan:
        case = sample_case(seed, patient, visit)
        rel = f"{IMAGE_DIR}/{case.record_id}.png"
        if image_dir is not None:
            data = encode_png(render_case(case, size), compress_level)
            with open(os.path.join(image_dir, f"{case.record_id}.png"), "wb") as handle:
                handle.write(data)
        rows.append(_record(case, rel))
    return rows


def _chunks(plan: list[tuple[int, int]], size: int) -> Iterable[list[tuple[int, int]]]:
    for start in range(0, len(plan), size):
        yield plan[start : start + size]


def build_records(config: SynthConfig, image_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Records of the dataset (one row per image, columns as in the manifest); writes the PNGs
    into ``image_dir`` when given. Uses ``config.workers`` processes."""
    plan = plan_records(config.n, config.seed, config.mean_visits)
    target = None if image_dir is None else str(image_dir)
    jobs = [(config.seed, chunk, config.size, config.png_compress_level, target) for chunk in _chunks(plan, 256)]
    rows: list[dict[str, Any]] = []
    if config.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=config.workers) as pool:
            for part in pool.map(_render_chunk, jobs):
                rows.extend(part)
    else:
        for job in jobs:
            rows.extend(_render_chunk(job))
    return pd.DataFrame.from_records(rows)


def synthetic_tasks() -> dict[str, Any]:
    """The label tasks of the dataset as ``medvl.data.manifest.TaskSpec`` objects."""
    from medvl.data.manifest import TaskSpec

    return {
        "findings": TaskSpec("findings", "multilabel", FINDINGS, BASE_FINDINGS, NOVEL_FINDINGS),
        "severity": TaskSpec("severity", "ordinal", SEVERITY_GRADES),
    }


def generate_dataset(out: str | os.PathLike[str], config: SynthConfig, overwrite: bool = False) -> dict[str, Any]:
    """Write ``out/images/*.png``, ``out/manifest.parquet`` and ``out/synth_summary.json``.

    An existing non-empty ``out`` is an error unless ``overwrite``. Images are written to a
    temporary directory renamed into place at the end, and the manifest atomically last, so an
    interrupted run leaves no manifest that points at missing images. Returns the summary.
    """
    from medvl import __version__
    from medvl.data.manifest import Manifest, write_manifest
    from medvl.data.splits import assign_splits
    from medvl.utils.io import atomic_write_json
    from medvl.utils.rundir import prepare_run_dir

    out_dir = prepare_run_dir(out, overwrite=overwrite, resumable=False)
    tmp_images = out_dir / f".{IMAGE_DIR}.partial"
    tmp_images.mkdir()
    start = time.perf_counter()
    records = build_records(config, tmp_images)
    elapsed = time.perf_counter() - start
    manifest = Manifest(records, synthetic_tasks(), root=out_dir)
    if config.test_fraction > 0 or config.val_fraction > 0 or config.n_folds > 0:
        manifest = assign_splits(manifest, test_fraction=config.test_fraction, val_fraction=config.val_fraction,
                                 n_folds=config.n_folds, task="findings", seed=config.seed)
    records = manifest.records
    tmp_images.rename(out_dir / IMAGE_DIR)
    write_manifest(manifest, out_dir / MANIFEST_NAME)
    summary = summarise(records)
    summary.update(
        medvl_version=__version__,
        generator_version=GENERATOR_VERSION,
        config=config.model_dump(),
        manifest=MANIFEST_NAME,
        manifest_hash=manifest.hash(),
        seconds=round(elapsed, 3),
        images_per_second=round(len(records) / max(elapsed, 1e-9), 1),
    )
    atomic_write_json(out_dir / SUMMARY_NAME, summary)
    return summary


def summarise(records: pd.DataFrame) -> dict[str, Any]:
    """Counts and label statistics of a synthetic record table (JSON-ready)."""
    labels = np.stack(records["labels.findings"].to_numpy())
    report_labels = np.stack(records["report_labels.findings"].to_numpy())
    n_findings = labels.sum(axis=1).astype(int)
    grades = records["labels.severity"].to_numpy()
    return {
        "n_images": len(records),
        "n_patients": int(records["group"].nunique()),
        "prevalence": {f: round(float(labels[:, i].mean()), 4) for i, f in enumerate(FINDINGS)},
        "report_prevalence": {f: round(float(report_labels[:, i].mean()), 4) for i, f in enumerate(FINDINGS)},
        "report_agreement": round(float((labels == report_labels).mean()), 4),
        "findings_per_image": {str(k): int((n_findings == k).sum()) for k in range(int(n_findings.max()) + 1)},
        "severity_grades": {SEVERITY_GRADES[g]: int((grades == g).sum()) for g in range(len(SEVERITY_GRADES))},
        "sentences_per_report": round(float(records["texts"].map(len).mean()), 2),
        "splits": {str(k): int(v) for k, v in records["split"].value_counts().sort_index().items()},
        "base_findings": list(BASE_FINDINGS),
        "novel_findings": list(NOVEL_FINDINGS),
    }

