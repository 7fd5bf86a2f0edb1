"""The synthetic biopsy generator: reproducible, grade-dependent texture, reports and patient folds."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from medvl.slides.synthetic import (
    GRADE_NAMES,
    SyntheticSlideConfig,
    generate_prostate_set,
    render_slide,
    synthetic_report,
)

TINY = SyntheticSlideConfig(width=384, height=256, mpp=0.5, levels=2, tile=128)


def test_same_seed_same_slide_and_texture_follows_the_grade() -> None:
    a, mask_a = render_slide(2, seed=5, config=TINY)
    b, _ = render_slide(2, seed=5, config=TINY)
    np.testing.assert_array_equal(a, b)
    nuclear = []
    for grade in range(len(GRADE_NAMES)):
        image, tissue = render_slide(grade, seed=3, config=SyntheticSlideConfig(width=768, height=512))
        dark = (image.astype(int).sum(axis=-1) < 330) & tissue  # nuclei: dark purple
        nuclear.append(dark.sum() / tissue.sum())
    # more, larger and darker nuclei with the grade (Gleason pattern 3 → 5)
    assert all(x < y for x, y in itertools.pairwise(nuclear)), nuclear
    assert 0.1 < mask_a.mean() < 0.6


def test_reports_name_the_grade() -> None:
    rng = np.random.default_rng(0)
    for grade in range(6):
        text = synthetic_report(grade, rng)
        assert text.startswith("Microscopy:") and " Conclusion: " in text
        if grade == 0:
            assert "enign" in text.split("Conclusion:")[1]
        else:
            assert f"ISUP {grade}" in text or f"ISUP grade {grade}" in text or f"grade group {grade}" in text


@pytest.mark.slow
def test_generated_set_has_patient_folds_stratified_by_grade(tmp_path: Path) -> None:
    summary = generate_prostate_set(tmp_path / "set", n=24, seed=1, n_folds=3, config=TINY)
    root = tmp_path / "set"
    reports = json.loads((root / "reports.json").read_text())
    assert summary["n_slides"] == 24 == len(reports) and len(list((root / "slides").glob("*.tif"))) == 24
    folds = {k: json.loads((root / "splits" / f"val_fold{k}.json").read_text()) for k in range(3)}
    test = json.loads((root / "splits" / "testset.json").read_text())
    placed = [s for k in folds for s in folds[k]] + list(test)
    assert sorted(placed) == sorted(reports)  # every slide once
    patient_fold = {}
    for k, members in folds.items():
        for slide in members:
            assert patient_fold.setdefault(reports[slide]["patient_id"], k) == k  # a patient in one fold
    assert not {reports[s]["patient_id"] for s in test} & set(patient_fold)
    assert (root / "patch_encoder" / "config.json").is_file()
    again = generate_prostate_set(tmp_path / "again", n=24, seed=1, n_folds=3, config=TINY)
    assert again == summary
    assert (root / "slides" / "biopsy0003.tif").read_bytes() == (tmp_path / "again" / "slides" / "biopsy0003.tif").read_bytes()
