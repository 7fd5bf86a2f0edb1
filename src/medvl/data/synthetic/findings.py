"""The catalogue of synthetic findings and how they are sampled per patient and per visit.

A *finding* is one abnormality present in an image, with a severity (1 mild, 2 moderate,
3 severe; 0 where severity does not apply, i.e. support devices), a laterality (``right``,
``left``, ``bilateral`` or ``""``) and a zone (``upper``, ``middle``, ``lower`` or ``""``).
Laterality is the *patient's* side: in the frontal (PA) view the patient's right lung is on
the image's left.

Prevalence and co-occurrence come from a latent *syndrome* per patient (healthy, heart
failure, infection, critical care, oncology, trauma) plus rare independent background
findings, so that most images have 0–2 findings and findings co-occur as they do in real
chest radiographs (cardiomegaly with oedema and effusions, devices with atelectasis and
pneumothorax, rib fractures with pneumothorax, …).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = [
    "BASE_FINDINGS",
    "DEVICE_NAMES",
    "FINDINGS",
    "FINDING_DESCRIPTIONS",
    "NOVEL_FINDINGS",
    "SEVERITY_GRADES",
    "SEVERITY_WORDS",
    "SYNDROMES",
    "Finding",
    "PatientProfile",
    "categorical",
    "device_kinds",
    "overall_severity_grade",
    "sample_patient_profile",
    "sample_visit_findings",
]

#: Findings in label order (the class order of the ``findings`` multilabel task).
FINDINGS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural_effusion",
    "pneumothorax",
    "consolidation",
    "edema",
    "atelectasis",
    "nodule",
    "mass",
    "support_devices",
    "rib_fracture",
)

#: Findings used for label supervision ("base") and held out for zero-shot studies ("novel").
#: The novel set is the focal lesions and the bone finding: their appearance (round opacities,
#: a cortical break) is not a variation of any base finding, so a model can only name them
#: from what it learnt from text.
NOVEL_FINDINGS: tuple[str, ...] = ("nodule", "mass", "rib_fracture")
BASE_FINDINGS: tuple[str, ...] = tuple(f for f in FINDINGS if f not in NOVEL_FINDINGS)

FINDING_DESCRIPTIONS: dict[str, str] = {
    "cardiomegaly": "enlarged heart shadow: cardiothoracic ratio ≈0.54 / 0.60 / 0.67 (normal 0.40–0.49)",
    "pleural_effusion": "fluid at the lung base with a meniscus; mild = blunted costophrenic angle only",
    "pneumothorax": "peripheral apico-lateral rim without lung markings, bounded by a thin pleural line",
    "consolidation": "patchy lobar opacity in one zone (or multifocal), denser and larger with severity",
    "edema": "bilateral perihilar haze with indistinct vessels (bat-wing), basal predominance when severe",
    "atelectasis": "basal linear (plate-like) bands; severe = dense basal wedge with raised hemidiaphragm",
    "nodule": "round opacity, radius ≈1.1–2 % of the image width",
    "mass": "lobulated round opacity, radius ≈3–6 % of the image width",
    "support_devices": "tubes and lines: endotracheal tube, central venous catheter, enteric tube, ECG leads",
    "rib_fracture": "cortical break in one lateral rib, displaced when severe",
}

#: Findings that have no laterality / zone / severity.
_NO_LATERALITY = frozenset({"cardiomegaly", "edema", "support_devices"})
_NO_ZONE = frozenset({"cardiomegaly", "pleural_effusion", "pneumothorax", "edema", "support_devices", "atelectasis"})
_NO_SEVERITY = frozenset({"support_devices"})
#: Findings that persist across a patient's visits (chronic) vs come and go (acute).
_CHRONIC = frozenset({"cardiomegaly", "nodule", "mass"})

SEVERITY_WORDS: dict[int, str] = {0: "", 1: "mild", 2: "moderate", 3: "severe"}

#: Names of the 0–5 overall severity grades (the ``severity`` ordinal task).
SEVERITY_GRADES: tuple[str, ...] = ("normal", "minimal", "mild", "moderate", "marked", "critical")

#: Clinical weight of each finding in the overall severity score (see ``overall_severity_grade``).
_ACUITY: dict[str, float] = {
    "cardiomegaly": 0.5,
    "pleural_effusion": 1.0,
    "pneumothorax": 1.5,
    "consolidation": 1.0,
    "edema": 1.0,
    "atelectasis": 0.5,
    "nodule": 0.5,
    "mass": 1.0,
    "support_devices": 0.0,
    "rib_fracture": 0.5,
}
#: Upper edges of the score bins for grades 1..4 (grade 5 above the last edge).
_GRADE_EDGES: tuple[float, ...] = (1.0, 2.0, 3.5, 5.5)


@dataclass(frozen=True)
class Finding:
    """One abnormality in one image.

    ``anchor`` is a finding-specific pair of numbers in [0, 1) drawn once per patient
    (e.g. where along a zone a nodule sits, which rib is broken), so that a lesion stays in
    place across a patient's visits.
    """

    name: str
    severity: int = 0
    laterality: str = ""
    zone: str = ""
    anchor: tuple[float, float] = (0.5, 0.5)

    def __post_init__(self) -> None:
        if self.name not in FINDINGS:
            raise ValueError(f"unknown finding {self.name!r}; known: {', '.join(FINDINGS)}")
        if self.severity not in (0, 1, 2, 3):
            raise ValueError(f"finding {self.name!r}: severity must be 0..3, got {self.severity}")
        if self.laterality not in ("", "right", "left", "bilateral"):
            raise ValueError(f"finding {self.name!r}: bad laterality {self.laterality!r}")
        if self.zone not in ("", "upper", "middle", "lower"):
            raise ValueError(f"finding {self.name!r}: bad zone {self.zone!r}")

    @property
    def sides(self) -> tuple[str, ...]:
        """Patient sides affected: ``("right",)``, ``("left",)``, both, or ``()``."""
        if self.laterality == "bilateral":
            return ("right", "left")
        return (self.laterality,) if self.laterality else ()

    def as_dict(self) -> dict[str, object]:
        """JSON-ready description (stored per record in the manifest's ``findings_detail``)."""
        return {"name": self.name, "severity": self.severity, "laterality": self.laterality, "zone": self.zone}


@dataclass(frozen=True)
class PatientProfile:
    """Latent state of one patient: a syndrome and the findings it tends to produce."""

    syndrome: str
    template: tuple[Finding, ...] = field(default_factory=tuple)


# syndrome -> (probability, {finding: probability of being in the patient's template})
SYNDROMES: dict[str, tuple[float, dict[str, float]]] = {
    "healthy": (0.42, {}),
    "heart_failure": (0.14, {"cardiomegaly": 0.85, "edema": 0.55, "pleural_effusion": 0.55, "atelectasis": 0.15}),
    "infection": (0.14, {"consolidation": 0.9, "pleural_effusion": 0.25, "atelectasis": 0.2}),
    "critical_care": (
        0.12,
        {"support_devices": 0.95, "atelectasis": 0.45, "pleural_effusion": 0.35, "edema": 0.2,
         "pneumothorax": 0.15, "consolidation": 0.2, "cardiomegaly": 0.15},
    ),
    "oncology": (0.10, {"nodule": 0.55, "mass": 0.45, "pleural_effusion": 0.3, "atelectasis": 0.15}),
    "trauma": (0.08, {"rib_fracture": 0.85, "pneumothorax": 0.4, "consolidation": 0.15, "pleural_effusion": 0.1}),
}

#: Independent per-visit background probability of each finding (incidental findings).
_BACKGROUND: dict[str, float] = {
    "cardiomegaly": 0.035,
    "pleural_effusion": 0.02,
    "pneumothorax": 0.005,
    "consolidation": 0.015,
    "edema": 0.005,
    "atelectasis": 0.05,
    "nodule": 0.03,
    "mass": 0.003,
    "support_devices": 0.03,
    "rib_fracture": 0.01,
}

_SEVERITY_P = (0.42, 0.35, 0.23)  # mild, moderate, severe


def categorical(rng: np.random.Generator, probs: Sequence[float]) -> int:
    """Index drawn with probabilities ``probs`` (normalised here); one uniform draw."""
    total = float(sum(probs))
    target = rng.random() * total
    acc = 0.0
    for i, p in enumerate(probs):
        acc += p
        if target < acc:
            return i
    return len(probs) - 1


def _sample_finding(name: str, rng: np.random.Generator, syndrome: str) -> Finding:
    severity = 0 if name in _NO_SEVERITY else categorical(rng, _SEVERITY_P) + 1
    laterality = ""
    if name not in _NO_LATERALITY:
        bilateral_p = {"pleural_effusion": 0.55 if syndrome == "heart_failure" else 0.2, "atelectasis": 0.35,
                       "consolidation": 0.12}.get(name, 0.0)
        laterality = "bilateral" if rng.random() < bilateral_p else ("right" if rng.random() < 0.55 else "left")
    zone = ""
    if name not in _NO_ZONE:
        zone_p = {"consolidation": (0.25, 0.3, 0.45), "nodule": (0.4, 0.35, 0.25), "mass": (0.45, 0.35, 0.2),
                  "rib_fracture": (0.25, 0.45, 0.3)}[name]
        zone = ("upper", "middle", "lower")[categorical(rng, zone_p)]
    anchor = (float(rng.random()), float(rng.random()))
    return Finding(name, severity, laterality, zone, anchor)


def sample_patient_profile(rng: np.random.Generator) -> PatientProfile:
    """Draw a patient's syndrome and the template of findings it brings."""
    names = list(SYNDROMES)
    probs = [SYNDROMES[s][0] for s in names]
    syndrome = names[categorical(rng, probs)]
    template = []
    for name in FINDINGS:  # fixed order: the draw sequence does not depend on dict ordering
        p = SYNDROMES[syndrome][1].get(name, 0.0)
        if p > 0 and rng.random() < p:
            template.append(_sample_finding(name, rng, syndrome))
    if syndrome == "oncology":  # a patient has a nodule or a mass as the index lesion, rarely both
        kinds = {f.name for f in template}
        if {"nodule", "mass"} <= kinds and rng.random() < 0.8:
            template = [f for f in template if f.name != "nodule"]
    return PatientProfile(syndrome, tuple(template))


def sample_visit_findings(profile: PatientProfile, rng: np.random.Generator) -> tuple[Finding, ...]:
    """Findings of one visit: the patient's template evolved by one step, plus background findings.

    Chronic findings persist (95 %) with stable severity; acute ones are present with
    probability 0.75 and their severity drifts by ±1. Returned in ``FINDINGS`` order.
    """
    present: dict[str, Finding] = {}
    for f in profile.template:
        chronic = f.name in _CHRONIC
        if rng.random() >= (0.95 if chronic else 0.75):
            continue
        severity = f.severity
        if severity > 0:
            drift = categorical(rng, (0.1, 0.8, 0.1) if chronic else (0.2, 0.6, 0.2)) - 1
            severity = int(np.clip(severity + drift, 1, 3))
        present[f.name] = replace(f, severity=severity)
    for name in FINDINGS:
        u = rng.random()
        if name not in present and u < _BACKGROUND[name]:
            present[name] = _sample_finding(name, rng, "healthy")
    return tuple(present[n] for n in FINDINGS if n in present)


def overall_severity_grade(findings: tuple[Finding, ...] | list[Finding]) -> int:
    """Ordinal 0–5 grade of how abnormal an image is.

    score = Σ acuity(finding) × severity (severity 1–3; support devices weigh 0), binned at
    (0, 1], (1, 2], (2, 3.5], (3.5, 5.5], > 5.5 into grades 1..5; 0 means no abnormality
    other than support devices. A severe (tension-like) pneumothorax is at least grade 4.
    """
    score = sum(_ACUITY[f.name] * f.severity for f in findings)
    if score <= 0:
        return 0
    grade = 1 + int(np.searchsorted(np.asarray(_GRADE_EDGES), score, side="left"))
    if any(f.name == "pneumothorax" and f.severity == 3 for f in findings):
        grade = max(grade, 4)
    return min(grade, 5)


#: Kinds of support device a ``support_devices`` finding can show, with their probabilities.
DEVICE_NAMES: tuple[str, ...] = ("endotracheal tube", "central venous catheter", "enteric tube", "ECG leads",
                                 "pacemaker")
_DEVICE_P = np.array([0.55, 0.6, 0.45, 0.35, 0.12])


def device_kinds(finding: Finding) -> tuple[str, ...]:
    """Which devices a ``support_devices`` finding has: a function of its anchor, so the renderer
    and the report agree and a patient keeps the same devices across visits."""
    rng = np.random.default_rng(int(finding.anchor[0] * 2**31))
    present = rng.random(len(DEVICE_NAMES)) < _DEVICE_P
    if not present.any():
        present[int(rng.integers(0, 4))] = True
    return tuple(name for name, p in zip(DEVICE_NAMES, present, strict=True) if p)
