"""A VQA set asked of the synthetic radiographs, answered from their ground-truth findings.

Every image of a synthetic manifest (its ``findings_detail`` column) gets up to four questions,
seeded per (seed, record id):

=================  ===========  ==========================================================
question type      answer type  question → answer
=================  ===========  ==========================================================
``presence``       closed       "Is there a pleural effusion?" → yes / no (half present, half absent)
``laterality``     closed       "Which side is the pneumothorax on?" → right / left / bilateral
``abnormality``    open         "What is the most severe abnormality?" → a finding, or "none"
``severity``       open         "How severe is the consolidation?" → mild / moderate / severe
=================  ===========  ==========================================================

Laterality and severity are asked only of a present finding that has them. The records follow
the VQA record layout (docs/DESIGN.md): ``question``, ``answer``, ``answer_type``,
``question_type``; ``image``, ``group``, ``split`` and ``fold`` are the source record's, so the
source split (grouped by patient) is kept; ``texts`` is empty.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np
import pandas as pd

from medvl.data.manifest import Manifest, ManifestError
from medvl.data.synthetic.findings import FINDINGS, SEVERITY_WORDS

__all__ = ["build_synthetic_vqa", "finding_phrase"]

_PHRASES = {
    "cardiomegaly": "cardiomegaly",
    "pleural_effusion": "a pleural effusion",
    "pneumothorax": "a pneumothorax",
    "consolidation": "consolidation",
    "edema": "pulmonary edema",
    "atelectasis": "atelectasis",
    "nodule": "a pulmonary nodule",
    "mass": "a lung mass",
    "support_devices": "a support device",
    "rib_fracture": "a rib fracture",
}


def finding_phrase(name: str, article: bool = True) -> str:
    """How a question names a finding ("a pleural effusion", or "pleural effusion" without article)."""
    phrase = _PHRASES[name]
    return phrase if article else phrase.removeprefix("a ").removeprefix("an ")


def _answer(name: str) -> str:
    return name.replace("_", " ")


def _questions(findings: list[dict[str, Any]], rng: np.random.Generator) -> list[tuple[str, str, str, str]]:
    """(question, answer, answer_type, question_type) for one image."""
    present = {f["name"]: f for f in findings}
    out: list[tuple[str, str, str, str]] = []
    absent = [f for f in FINDINGS if f not in present]
    ask_present = bool(present) and (not absent or rng.random() < 0.5)
    asked = str(rng.choice(sorted(present))) if ask_present else str(rng.choice(absent))
    out.append((f"Is there {finding_phrase(asked)}?", "yes" if ask_present else "no", "closed", "presence"))
    sided = sorted(n for n, f in present.items() if f.get("laterality") in ("right", "left", "bilateral"))
    if sided:
        name = str(rng.choice(sided))
        out.append((f"Which side is the {finding_phrase(name, article=False)} on?", present[name]["laterality"],
                     "closed", "laterality"))
    graded = [(int(f.get("severity", 0)), -FINDINGS.index(n), n) for n, f in present.items() if n != "support_devices"]
    worst = _answer(max(graded)[2]) if graded else "none"
    out.append(("What is the most severe abnormality?", worst, "open", "abnormality"))
    with_severity = sorted(n for n, f in present.items() if int(f.get("severity", 0)) > 0)
    if with_severity:
        name = str(rng.choice(with_severity))
        out.append((f"How severe is the {finding_phrase(name, article=False)}?",
                    SEVERITY_WORDS[int(present[name]["severity"])], "open", "severity"))
    return out


def build_synthetic_vqa(manifest: Manifest, seed: int = 0) -> Manifest:
    """The VQA manifest of ``manifest`` (a synthetic-data manifest with ``findings_detail``)."""
    df = manifest.records
    if "findings_detail" not in df.columns:
        raise ManifestError("the manifest has no findings_detail column: synthetic VQA needs a manifest written "
                            "by `medvl data synth`")
    rows: list[dict[str, Any]] = []
    for rec in df.itertuples(index=False):
        rid = str(rec.id)
        try:
            findings = json.loads(str(rec.findings_detail))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"record {rid!r}: findings_detail is not JSON ({exc})") from None
        rng = np.random.default_rng([seed, zlib.crc32(rid.encode("utf-8"))])
        for k, (question, answer, answer_type, question_type) in enumerate(_questions(findings, rng)):
            rows.append({
                "id": f"{rid}-q{k}", "image": rec.image, "image_type": getattr(rec, "image_type", ""), "texts": [],
                "question": question, "answer": answer, "answer_type": answer_type, "question_type": question_type,
                "group": rec.group, "split": rec.split, "fold": int(rec.fold), "source": "synthetic-vqa",
                "image_id": rid,
            })
    return Manifest(pd.DataFrame(rows), [], root=manifest.root)
