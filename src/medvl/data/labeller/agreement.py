"""Agreement of the report labeller with the synthetic reports' ground-truth mention labels.

The synthetic generator (:mod:`medvl.data.synthetic`) writes each sentence with a known status per
finding (1 positive, 0 negated, -1 hedged, not mentioned). This module labels the same sentences
and reports with :class:`ReportLabeller` and compares, per synthetic finding:

* ``agreement``: fraction of (sentence or report, finding) pairs whose 4-way status
  (positive / negative / uncertain / not mentioned) matches;
* ``f1_positive``, ``f1_negative``, ``f1_uncertain``: F1 of detecting each status.

CheXpert observations are mapped to the synthetic findings by :data:`SYNTHETIC_TO_CHEXPERT`
(the synthetic ``consolidation`` is written as consolidation or pneumonia, so it is the union of
those two CheXpert classes; ``nodule`` and ``mass`` are both Lung Lesion). Codes of several
CheXpert classes combine by positive > uncertain > negative. Known convention differences:
"airspace opacity" sentences are Lung Opacity for the labeller (CheXpert) but consolidation for
the generator, and "opacities, likely atelectasis" is a positive Lung Opacity for the labeller
but no consolidation mention for the generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medvl.data.labeller.chexpert import ReportLabeller, aggregate_codes
from medvl.data.labeller.rules import CHEXPERT_CLASSES

__all__ = ["SYNTHETIC_TO_CHEXPERT", "status_f1", "synthetic_agreement"]

#: Synthetic finding → the CheXpert observations whose mentions express it.
SYNTHETIC_TO_CHEXPERT: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("Cardiomegaly",),
    "pleural_effusion": ("Pleural Effusion",),
    "pneumothorax": ("Pneumothorax",),
    "consolidation": ("Consolidation", "Pneumonia"),
    "edema": ("Edema",),
    "atelectasis": ("Atelectasis",),
    "nodule": ("Lung Lesion",),
    "mass": ("Lung Lesion",),
    "support_devices": ("Support Devices",),
    "rib_fracture": ("Fracture",),
}
_NOT_MENTIONED = -2
_INDEX = {c: i for i, c in enumerate(CHEXPERT_CLASSES)}


def _to_synthetic(codes: np.ndarray, finding: str) -> int:
    value = aggregate_codes(float(codes[_INDEX[c]]) for c in SYNTHETIC_TO_CHEXPERT[finding])
    return _NOT_MENTIONED if np.isnan(value) else int(value)


def status_f1(truth: Sequence[int], pred: Sequence[int], status: int) -> float:
    """F1 of detecting ``status`` (NaN when it occurs in neither truth nor prediction)."""
    t = np.asarray(truth) == status
    p = np.asarray(pred) == status
    tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
    return float("nan") if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def synthetic_agreement(n_patients: int = 300, seed: int = 0, labeller: ReportLabeller | None = None) -> dict[str, Any]:
    """Label ``n_patients`` synthetic first-visit reports and compare with their ground truth.

    Returns ``{"sentence": {...}, "report": {...}}``; each holds per-finding ``agreement`` and
    ``f1_positive/negative/uncertain`` plus their macro means over findings (NaN-skipping), and the
    number of items compared. Lung Lesion predictions are compared with the synthetic
    nodule/mass statuses combined.
    """
    from medvl.data.synthetic.findings import FINDINGS
    from medvl.data.synthetic.generator import sample_case

    labeller = labeller or ReportLabeller()
    merged = {"nodule_mass": ("nodule", "mass")}
    names = [f for f in FINDINGS if f not in ("nodule", "mass")] + ["nodule_mass"]
    pairs: dict[str, dict[str, tuple[list[int], list[int]]]] = {
        level: {n: ([], []) for n in names} for level in ("sentence", "report")}

    def combine(codes: list[int]) -> int:
        known = [c for c in codes if c != _NOT_MENTIONED]
        return _NOT_MENTIONED if not known else int(aggregate_codes(float(c) for c in known))

    for patient in range(n_patients):
        report = sample_case(seed, patient, 0).report
        for sentence in report.sentences:
            codes = labeller.sentence_vector(sentence.text)
            for name in names:
                parts = merged.get(name, (name,))
                truth = combine([sentence.code(f) for f in parts])
                pairs["sentence"][name][0].append(truth)
                pairs["sentence"][name][1].append(_to_synthetic(codes, parts[0]))
        codes = labeller.label_text(" ".join(report.texts))
        status = dict(zip(FINDINGS, report.report_status(), strict=True))
        for name in names:
            parts = merged.get(name, (name,))
            pairs["report"][name][0].append(combine([status[f] for f in parts]))
            pairs["report"][name][1].append(_to_synthetic(codes, parts[0]))
    out: dict[str, Any] = {}
    for level, per_finding in pairs.items():
        table: dict[str, dict[str, float]] = {}
        for name, (truths, preds) in per_finding.items():
            table[name] = {
                "agreement": float(np.mean(np.asarray(truths) == np.asarray(preds))),
                "f1_positive": status_f1(truths, preds, 1),
                "f1_negative": status_f1(truths, preds, 0),
                "f1_uncertain": status_f1(truths, preds, -1),
            }
        macro = {k: float(np.nanmean([row[k] for row in table.values()])) for k in next(iter(table.values()))}
        out[level] = {"per_finding": table, "macro": macro, "n_items": len(next(iter(per_finding.values()))[0])}
    out["n_patients"], out["seed"], out["global_negations"] = n_patients, seed, labeller.global_negations
    return out
