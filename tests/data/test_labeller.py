"""Rule-based CheXpert report labeller: sections, sentences, negation, uncertainty, agreement."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medvl.data.labeller import CHEXPERT_CLASSES, ReportLabeller, select_text, split_sentences
from medvl.data.labeller.agreement import status_f1, synthetic_agreement

IDX = {c: i for i, c in enumerate(CHEXPERT_CLASSES)}
L = ReportLabeller()


@pytest.mark.parametrize(("sentence", "expected"), [
    ("There is a small left pleural effusion.", {"Pleural Effusion": 1.0}),
    ("No pneumothorax or pleural effusion.", {"Pneumothorax": 0.0, "Pleural Effusion": 0.0}),
    ("No evidence of focal consolidation, pleural effusion, or pneumothorax.",
     {"Consolidation": 0.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0}),
    ("Possible right lower lobe pneumonia.", {"Pneumonia": -1.0}),
    ("Pneumonia cannot be excluded.", {"Pneumonia": -1.0}),
    ("Findings concerning for pulmonary edema.", {"Edema": -1.0}),
    ("Atelectasis or pneumonia in the left base.", {"Atelectasis": -1.0, "Pneumonia": -1.0}),
    ("Effusion has resolved.", {"Pleural Effusion": 0.0}),
    ("Pneumothorax is not seen, but there is a small effusion.", {"Pneumothorax": 0.0, "Pleural Effusion": 1.0}),
    # pseudo-negation: "no change" does not negate
    ("No change in the moderate left pleural effusion.", {"Pleural Effusion": 1.0}),
    ("Heart size is normal.", {"Cardiomegaly": 0.0}),
    ("The heart is mildly enlarged.", {"Cardiomegaly": 1.0}),
    ("The heart size is possibly mildly enlarged.", {"Cardiomegaly": -1.0}),
    ("The heart is not enlarged.", {"Cardiomegaly": 0.0}),
    ("The cardiomediastinal silhouette is within normal limits.",
     {"Enlarged Cardiomediastinum": 0.0, "Cardiomegaly": 0.0}),
    ("Heart size and mediastinal contours are normal.", {"Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0}),
    ("Moderate cardiomegaly.", {"Cardiomegaly": 1.0}),
    # longest match: a nodular opacity is a lesion, a pericardial effusion is not a pleural effusion
    ("Stable nodular opacity in the right upper lobe.", {"Lung Lesion": 1.0}),
    ("Small pericardial effusion.", {}),
    ("The endotracheal tube terminates 4 cm above the carina.", {"Support Devices": 1.0}),
    ("Interval removal of the right chest tube.", {"Support Devices": 0.0}),
    ("Left rib fractures.", {"Fracture": 1.0}),
    ("Old healed left clavicular fracture.", {"Fracture": 1.0}),  # CheXpert's convention (old_fractures)
    ("Bilateral lower lobes collapse.", {"Atelectasis": 1.0}),
    ("No acute cardiopulmonary process.", {}),
])
def test_sentence_codes(sentence: str, expected: dict[str, float]) -> None:
    assert L.label_sentence(sentence) == expected


def test_report_aggregation_and_no_finding() -> None:
    report = ("FINDINGS: Possible small effusion. There is a moderate right pleural effusion. No pneumothorax.\n"
              "IMPRESSION: Right effusion.")
    codes = L.label_report(report)
    assert codes[IDX["Pleural Effusion"]] == 1.0  # positive beats uncertain
    assert codes[IDX["Pneumothorax"]] == 0.0
    assert math.isnan(codes[IDX["No Finding"]])
    assert math.isnan(codes[IDX["Edema"]])
    normal = L.label_report("FINDINGS: Heart size is normal. No effusion. Monitoring leads overlie the chest.")
    assert normal[IDX["No Finding"]] == 1.0  # support devices do not count against No Finding
    assert normal[IDX["Support Devices"]] == 1.0
    hedged = L.label_report("IMPRESSION: Findings may represent early pneumonia.")
    assert math.isnan(hedged[IDX["No Finding"]])


def test_global_negations_option() -> None:
    plain = ReportLabeller().label_sentence("No acute cardiopulmonary process.")
    assert plain == {}
    g = ReportLabeller(global_negations=True)
    codes = g.label_sentence("No acute cardiopulmonary process.")
    assert codes["Pleural Effusion"] == 0.0 and codes["Pneumothorax"] == 0.0 and "Cardiomegaly" not in codes
    assert g.label_sentence("No acute osseous abnormality.") == {"Fracture": 0.0}
    # an explicit positive in the same sentence still wins
    assert g.label_sentence("The lungs are clear except for a small left effusion.")["Pleural Effusion"] == 1.0


def test_sections_and_sentences() -> None:
    report = ("FINAL REPORT\n EXAMINATION: CHEST (PA AND LAT)\n INDICATION: r/o pneumonia\n\n FINDINGS:\n\n"
              " The lungs are clear. A 1.5 cm nodule, approx. 2 cm from the hilum, is seen in the right upper\n lobe.\n\n"
              " IMPRESSION:\n\n 1. No acute process. 2. Right upper lobe nodule.\n")
    parts = select_text(report)
    assert [name for name, _ in parts] == ["findings", "impression"]
    assert split_sentences(parts[0][1]) == [
        "The lungs are clear.", "A 1.5 cm nodule, approx. 2 cm from the hilum, is seen in the right upper lobe."]
    assert split_sentences(parts[1][1]) == ["No acute process.", "Right upper lobe nodule."]
    # indication is not labelled: "r/o pneumonia" must not count
    assert math.isnan(L.label_report(report)[IDX["Pneumonia"]])
    # no wanted header: last paragraph fallback; present-but-empty sections yield nothing
    assert select_text("Some history.\n\nSmall effusion.") == [("last_paragraph", "Small effusion.")]
    assert select_text("FINDINGS:\n\nIMPRESSION:\n") == []
    assert select_text("Some history.\n\nSmall effusion.", fallback="none") == []
    assert select_text("FINDINGS AND IMPRESSION: Mild edema.") == [("findings_impression", "Mild edema.")]


def test_status_f1() -> None:
    assert status_f1([1, 0, 1, -2], [1, 1, 0, -2], 1) == pytest.approx(0.5)
    assert math.isnan(status_f1([0, 0], [0, 0], 1))


def test_agreement_with_synthetic_reports() -> None:
    # Measured (300 patients, seed 0, global_negations=True): sentence-level macro agreement 0.995,
    # report-level macro F1 positive 1.000, negative 0.996, uncertain 1.000 (see docs/datasets.md).
    result = synthetic_agreement(n_patients=60, seed=0, labeller=ReportLabeller(global_negations=True,
                                                                                 old_fractures="ignore"))
    assert result["sentence"]["n_items"] > 200
    assert result["sentence"]["macro"]["agreement"] >= 0.97
    assert result["report"]["macro"]["f1_positive"] >= 0.95
    assert result["report"]["macro"]["f1_uncertain"] >= 0.9
    assert result["report"]["per_finding"]["pleural_effusion"]["agreement"] >= 0.97
    plain = synthetic_agreement(n_patients=60, seed=0)
    # without global negations, "no acute cardiopulmonary process" leaves findings unmentioned
    assert plain["report"]["macro"]["f1_negative"] < result["report"]["macro"]["f1_negative"]


def test_label_reports_cli(tmp_path: Path) -> None:
    from medvl.cli.main import build_app

    reports = tmp_path / "reports"
    (reports / "a").mkdir(parents=True)
    (reports / "a/s1.txt").write_text("FINDINGS: Large left pleural effusion.\nIMPRESSION: Effusion.")
    (reports / "s2.txt").write_text("FINDINGS: No pneumothorax. Heart size is normal.")
    out = tmp_path / "labels.csv"
    result = CliRunner().invoke(build_app(), ["data", "label-reports", str(reports), "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out).set_index("id")
    assert list(frame.columns) == list(CHEXPERT_CLASSES)
    assert frame.loc["a/s1", "Pleural Effusion"] == 1.0
    assert frame.loc["s2", "Pneumothorax"] == 0.0 and frame.loc["s2", "No Finding"] == 1.0
    table = tmp_path / "reports.csv"
    pd.DataFrame({"study": ["x"], "text": ["Possible pneumonia."]}).to_csv(table, index=False)
    result = CliRunner().invoke(build_app(), ["data", "label-reports", str(table), "--out", str(tmp_path / "t.csv"),
                                              "--text-column", "text", "--id-column", "study", "--sections", "all"])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(tmp_path / "t.csv")["Pneumonia"].tolist() == [-1.0]
    bad = CliRunner().invoke(build_app(), ["data", "label-reports", str(table), "--out", str(tmp_path / "u.csv")])
    assert bad.exit_code == 2 and "no column(s) ['report', 'id']" in bad.output
    # a manifest: its `report` column by default, or its list-valued `texts` (one text per list, joined)
    manifest = tmp_path / "m.parquet"
    pd.DataFrame({"id": ["r1", "r2"], "report": ["FINDINGS: Edema.", None],
                  "texts": [["Large left pleural effusion.", "No pneumothorax."], []]}).to_parquet(manifest)
    for column, expected in (("report", "Edema"), ("texts", "Pleural Effusion")):
        out = tmp_path / f"{column}.csv"
        result = CliRunner().invoke(build_app(), ["data", "label-reports", str(manifest), "--out", str(out),
                                                  "--text-column", column, "--sections", "all"])
        assert result.exit_code == 0, result.output
        frame = pd.read_csv(out).set_index("id")
        assert frame.loc["r1", expected] == 1.0 and frame.loc["r2"].isna().sum() == 13, column
    if_texts = pd.read_csv(tmp_path / "texts.csv").set_index("id")
    assert if_texts.loc["r1", "Pneumothorax"] == 0.0


def test_label_reports_matrix_shape() -> None:
    codes = L.label_reports(["FINDINGS: Edema.", ""], sections=True)
    assert codes.shape == (2, 14)
    assert codes[0, IDX["Edema"]] == 1.0
    assert np.isnan(codes[1]).sum() == 13  # only No Finding set on an empty report
