"""Reports agree with their sentence labels; report labels differ from the truth as in MIMIC-CXR;
prevalence, co-occurrence and grades are plausible."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medvl.data.synthetic import (
    BASE_FINDINGS,
    FINDINGS,
    NOVEL_FINDINGS,
    Finding,
    overall_severity_grade,
    plan_records,
    sample_case,
)
from medvl.data.synthetic.reports import NEGATIVE, NOT_MENTIONED, POSITIVE, UNCERTAIN

HEDGES = re.compile(r"\b(possible|possibly|cannot be excluded|cannot exclude|may|questionable|likely|borderline)\b",
                    re.IGNORECASE)
NEGATIONS = re.compile(r"^(no |there is no |no evidence of |otherwise no )|normal|unremarkable|clear",
                       re.IGNORECASE)


@pytest.fixture(scope="module")
def cases() -> list:
    return [sample_case(3, p, v) for p, v in plan_records(800, 3)]


def test_sentence_status_matches_the_wording(cases: list) -> None:
    kinds: set[str] = set()
    for case in cases:
        report = case.report
        labels = report.sentence_labels()
        status = report.sentence_status()
        assert len(labels) == len(status) == len(report.texts) >= 2
        for sentence, row_labels, row_status in zip(report.sentences, labels, status, strict=True):
            kinds.add(sentence.kind)
            assert sentence.text.strip() and sentence.text.endswith(".")
            codes = {c for c in row_status if c != NOT_MENTIONED}
            if sentence.kind == "negation" or sentence.kind == "normal":
                assert codes == {NEGATIVE}, sentence.text
                assert NEGATIONS.search(sentence.text), sentence.text
                assert sum(row_labels) == 0, f"negated finding labelled positive: {sentence.text}"
            elif sentence.kind == "hedged":
                assert codes == {UNCERTAIN}, sentence.text
                assert HEDGES.search(sentence.text), f"hedged sentence without a hedge: {sentence.text}"
                assert all(row_labels[i] == 1.0 for i, c in enumerate(row_status) if c == UNCERTAIN)
            elif sentence.kind == "positive":
                assert codes == {POSITIVE}, sentence.text
                assert not HEDGES.search(sentence.text) or "likely" not in sentence.text.lower()
                for i, code in enumerate(row_status):
                    if code == POSITIVE:  # definite mentions are only ever of present findings
                        assert case.label_vector[i] == 1.0, f"{FINDINGS[i]} asserted but absent: {sentence.text}"
            else:
                assert sentence.kind == "distractor" and not codes, sentence.text
        assert report.text.startswith("FINDINGS: ") and "\nIMPRESSION: " in report.text
    assert kinds == {"positive", "hedged", "negation", "normal", "distractor"}


def test_report_labels_differ_from_image_labels_as_in_mimic(cases: list) -> None:
    truth = np.array([c.label_vector for c in cases])
    mined = np.array([c.report.report_labels() for c in cases])
    status = np.array([c.report.report_status() for c in cases])
    agreement = (truth == mined).mean()
    assert 0.9 < agreement < 0.995  # close, but not identical
    # mild findings are often not mentioned or hedged; severe ones almost always stated
    severity = np.array([[next((f.severity for f in c.findings if f.name == n), -1) for n in FINDINGS]
                         for c in cases])
    present = severity >= 1
    mild_stated = (status[present & (severity == 1)] == POSITIVE).mean()
    severe_stated = (status[present & (severity == 3)] == POSITIVE).mean()
    mild_status = status[present & (severity == 1)]
    mild_missed = np.isin(mild_status, (NOT_MENTIONED, NEGATIVE)).mean()
    assert mild_stated < 0.6 < 0.9 < severe_stated
    assert 0.15 < mild_missed < 0.5
    assert (mild_status == NOT_MENTIONED).any() and (mild_status == NEGATIVE).any()  # omitted, or even negated
    # some absent findings are hedged (false-positive uncertainty), none is stated definitely
    assert ((truth == 0) & (status == UNCERTAIN)).sum() > 0
    assert ((truth == 0) & (status == POSITIVE)).sum() == 0
    # explicit negations of absent findings are common
    assert ((truth == 0) & (status == NEGATIVE)).mean() > 0.2


def test_reports_vary_in_wording_and_order(cases: list) -> None:
    texts = [c.report.text for c in cases]
    effusion = {s.text for c in cases for s in c.report.sentences if s.kind == "positive"
                and s.code("pleural_effusion") == POSITIVE and s.section == "findings"}
    assert len(effusion) >= 6  # several templates, sizes and sides
    assert len(set(texts)) > 0.8 * len(texts)
    first = {c.report.sentences[0].kind for c in cases}
    assert len(first) >= 3  # sentence order varies


def test_prevalence_and_cooccurrence_are_plausible(cases: list) -> None:
    truth = np.array([c.label_vector for c in cases])
    prevalence = truth.mean(axis=0)
    for name, p in zip(FINDINGS, prevalence, strict=True):
        assert 0.02 <= p <= 0.3, f"{name}: prevalence {p:.3f}"
    counts = truth.sum(axis=1)
    assert 0.3 < (counts == 0).mean() < 0.55
    assert (counts <= 2).mean() > 0.8  # most images have 0–2 findings
    col = {n: i for i, n in enumerate(FINDINGS)}

    def conditional(a: str, b: str) -> float:
        return float(truth[truth[:, col[b]] == 1, col[a]].mean())

    assert conditional("edema", "cardiomegaly") > 2 * prevalence[col["edema"]]
    assert conditional("pneumothorax", "rib_fracture") > 2 * prevalence[col["pneumothorax"]]
    assert conditional("atelectasis", "support_devices") > 1.5 * prevalence[col["atelectasis"]]


def test_severity_grade_covers_all_grades_and_follows_findings(cases: list) -> None:
    grades = np.array([c.grade for c in cases])
    assert set(grades.tolist()) == set(range(6))
    assert overall_severity_grade([]) == 0
    assert overall_severity_grade([Finding("support_devices", 0)]) == 0
    assert overall_severity_grade([Finding("nodule", 1, "right", "upper")]) == 1
    assert overall_severity_grade([Finding("pneumothorax", 3, "left")]) >= 4
    many = [Finding("edema", 3), Finding("pleural_effusion", 3, "bilateral"), Finding("consolidation", 3, "right", "lower")]
    assert overall_severity_grade(many) == 5
    # grade increases with severity of the same finding
    assert [overall_severity_grade([Finding("consolidation", s, "right", "lower")]) for s in (1, 2, 3)] == [1, 2, 3]


def test_base_and_novel_split_partitions_the_findings() -> None:
    assert set(BASE_FINDINGS) | set(NOVEL_FINDINGS) == set(FINDINGS)
    assert not set(BASE_FINDINGS) & set(NOVEL_FINDINGS)
    assert set(NOVEL_FINDINGS) == {"nodule", "mass", "rib_fracture"}


def test_patients_have_several_visits_with_persistent_lesions() -> None:
    plan = plan_records(400, 0)
    visits = np.bincount([p for p, _ in plan])
    assert visits.max() >= 3 and (visits >= 2).mean() > 0.5
    persistent = 0
    for patient in range(60):
        lesions = [{(f.name, f.laterality, f.zone) for f in sample_case(0, patient, v).findings
                    if f.name in ("nodule", "mass")} for v in range(3)]
        persistent += bool(lesions[0] and lesions[0] == lesions[1])
    assert persistent >= 1


def test_bad_findings_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown finding 'fracture'"):
        Finding("fracture", 1)
    with pytest.raises(ValueError, match="severity"):
        Finding("nodule", 4, "right", "upper")
    with pytest.raises(ValueError, match="laterality"):
        Finding("nodule", 1, "middle", "upper")
    with pytest.raises(ValueError, match="appears twice"):
        sample_case(0, 0, 0, findings=(Finding("edema", 1), Finding("edema", 2)))
