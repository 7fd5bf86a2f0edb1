"""Every finding changes the pixels where it should, more with severity; anatomy and acquisition vary."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.data.synthetic import FINDINGS, Finding, render_case, sample_case

SIZE = 128
PATIENTS = (0, 3, 7)


def _diff(patient: int, finding: Finding | None) -> np.ndarray:
    """|image with finding − same patient/visit without any finding|, float (H, W)."""
    base = render_case(sample_case(11, patient, 0, findings=()), SIZE).astype(np.float64)
    if finding is None:
        return np.zeros_like(base)
    other = render_case(sample_case(11, patient, 0, findings=(finding,)), SIZE).astype(np.float64)
    return np.abs(other - base)


def _image_left_share(d: np.ndarray) -> float:
    """Share of the change in the image's left half (= the patient's right in a PA film)."""
    return float(d[:, : SIZE // 2].sum() / d.sum())


def _centroid_row(d: np.ndarray) -> float:
    """Centroid row of the change as a fraction of the height (0 top, 1 bottom)."""
    rows = np.arange(SIZE)[:, None]
    return float((d * rows).sum() / d.sum() / SIZE)


def _mean_lateral_distance(d: np.ndarray) -> float:
    """Change-weighted mean |column − centre| as a fraction of the width."""
    cols = np.abs(np.arange(SIZE)[None, :] - (SIZE - 1) / 2)
    return float((d * cols).sum() / d.sum() / SIZE)


@pytest.mark.parametrize("patient", PATIENTS)
def test_unilateral_findings_change_their_own_side(patient: int) -> None:
    # PA convention: the patient's right is the image's left
    for name, zone in (("pleural_effusion", ""), ("pneumothorax", ""), ("consolidation", "lower"),
                       ("atelectasis", ""), ("nodule", "middle"), ("mass", "upper"), ("rib_fracture", "middle")):
        right = _diff(patient, Finding(name, 3, "right", zone))
        left = _diff(patient, Finding(name, 3, "left", zone))
        assert right.sum() > 0 and left.sum() > 0, name
        assert _image_left_share(right) > 0.9, f"{name} right: {_image_left_share(right):.2f}"
        assert _image_left_share(left) < 0.1, f"{name} left: {_image_left_share(left):.2f}"


@pytest.mark.parametrize("patient", PATIENTS)
def test_bilateral_findings_change_both_sides(patient: int) -> None:
    for finding in (Finding("edema", 2), Finding("pleural_effusion", 2, "bilateral"),
                    Finding("atelectasis", 2, "bilateral")):
        share = _image_left_share(_diff(patient, finding))
        assert 0.25 < share < 0.75, f"{finding.name}: left share {share:.2f}"


@pytest.mark.parametrize("patient", PATIENTS)
def test_findings_change_the_expected_zone(patient: int) -> None:
    # basal findings sit low, apical pneumothorax high, zoned lesions follow their zone
    assert _centroid_row(_diff(patient, Finding("pleural_effusion", 2, "right"))) > 0.55
    assert _centroid_row(_diff(patient, Finding("atelectasis", 2, "left"))) > 0.55
    assert _centroid_row(_diff(patient, Finding("pneumothorax", 2, "right"))) < 0.5
    for name in ("consolidation", "nodule", "mass"):
        upper = _centroid_row(_diff(patient, Finding(name, 2, "right", "upper")))
        lower = _centroid_row(_diff(patient, Finding(name, 2, "right", "lower")))
        assert upper < 0.45 < lower or upper + 0.15 < lower, f"{name}: upper {upper:.2f}, lower {lower:.2f}"
    # pneumothorax is peripheral (lateral rim), cardiomegaly central-left and low
    assert _mean_lateral_distance(_diff(patient, Finding("pneumothorax", 2, "left"))) > 0.25
    heart = _diff(patient, Finding("cardiomegaly", 2))
    assert 0.4 < _centroid_row(heart) < 0.85
    assert _image_left_share(heart) < 0.5  # the heart grows mostly to the patient's left
    assert _mean_lateral_distance(heart) < 0.3


@pytest.mark.parametrize("name", [f for f in FINDINGS if f != "support_devices"])
def test_severity_is_monotonic_and_mild_is_subtle(name: str) -> None:
    lat = "" if name in ("cardiomegaly", "edema") else "right"
    zone = "middle" if name in ("consolidation", "nodule", "mass", "rib_fracture") else ""
    for patient in PATIENTS:
        totals = [_diff(patient, Finding(name, sev, lat, zone)).sum() for sev in (1, 2, 3)]
        assert 0 < totals[0] < totals[1] < totals[2], f"{name} patient {patient}: {totals}"
        assert totals[0] < 0.7 * totals[2], f"{name}: mild not subtler than severe: {totals}"


def test_focal_findings_are_focal() -> None:
    for finding, max_share in ((Finding("nodule", 2, "right", "upper"), 0.01),
                               (Finding("rib_fracture", 3, "left", "middle"), 0.01),
                               (Finding("mass", 2, "left", "middle"), 0.05)):
        d = _diff(0, finding)
        changed = float((d > 0).mean())
        assert 0 < changed < max_share, f"{finding.name}: {changed:.4f} of pixels changed"


def test_support_devices_draw_radio_opaque_lines() -> None:
    for patient in PATIENTS:
        base = render_case(sample_case(11, patient, 0, findings=()), SIZE).astype(int)
        dev = render_case(sample_case(11, patient, 0, findings=(Finding("support_devices", 0),)), SIZE).astype(int)
        assert (dev - base).min() >= 0, "devices only add density (brightness)"
        assert (dev - base > 20).sum() > 15


def test_findings_do_not_disturb_each_other() -> None:
    # adding a left-sided finding leaves a right-sided one's pixels untouched
    a = Finding("consolidation", 2, "right", "lower")
    b = Finding("nodule", 3, "left", "upper")
    only_a = render_case(sample_case(11, 0, 0, findings=(a,)), SIZE)
    both = render_case(sample_case(11, 0, 0, findings=(a, b)), SIZE)
    assert np.array_equal(only_a[:, : SIZE // 2], both[:, : SIZE // 2])


def test_patients_and_acquisitions_vary() -> None:
    images = [render_case(sample_case(5, p, v, findings=()), 64).astype(float) for p in range(4) for v in range(2)]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 1.0
    means = [im.mean() for im in images]
    assert max(means) - min(means) > 3  # exposure varies
    case = sample_case(5, 0, 0)
    assert case.anatomy == sample_case(5, 0, 1).anatomy  # anatomy is the patient's
    assert case.acquisition != sample_case(5, 0, 1).acquisition


def test_radiograph_looks_like_a_chest_film() -> None:
    image = render_case(sample_case(2, 0, 0, findings=()), SIZE).astype(float)
    h = SIZE
    lung_right = image[int(0.35 * h) : int(0.55 * h), int(0.18 * h) : int(0.35 * h)].mean()
    lung_left = image[int(0.35 * h) : int(0.55 * h), int(0.68 * h) : int(0.82 * h)].mean()
    abdomen = image[int(0.9 * h) :, int(0.3 * h) : int(0.7 * h)].mean()
    spine = image[int(0.2 * h) : int(0.4 * h), h // 2 - 2 : h // 2 + 2].mean()
    corner = image[:4, :4].mean()
    assert lung_right < abdomen - 40 and lung_left < abdomen - 40  # aerated lungs are dark
    assert spine > lung_right + 40  # mediastinum is bright
    assert corner < 40  # air outside the body
    assert image.dtype == float and render_case(sample_case(2, 0, 0), 80).shape == (80, 80)
