"""The report labeller's rules for the error classes seen on real reports, pinned with sentences
written for medvl (benchmarks/data/labeller_sentences.tsv holds the full hand-labelled set)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from benchmarks.labeller_negex import SENTENCES, load_sentences
from typer.testing import CliRunner

from medvl.data.labeller import ReportLabeller


@pytest.fixture(scope="module")
def labeller() -> ReportLabeller:
    return ReportLabeller()


@pytest.mark.parametrize(("group", "sentence", "gold"), load_sentences(SENTENCES), ids=lambda v: v if isinstance(v, str) else "")
def test_hand_labelled_sentence(labeller: ReportLabeller, group: str, sentence: str, gold: dict[str, float]) -> None:
    assert labeller.label_sentence(sentence) == gold, group


def test_normality_phrase_negates_the_finding_it_follows(labeller: ReportLabeller) -> None:
    # measured on real reports: "vascular engorgement … within limits of normal" was read as edema
    assert labeller.label_sentence("Mild vascular engorgement, within the limits of normal.") == {"Edema": 0.0}
    assert labeller.label_sentence("Mild vascular engorgement.") == {"Edema": 1.0}
    # the normality phrase belongs to the nearest finding only
    assert labeller.label_sentence("Small left effusion, heart size within normal limits.") == {
        "Pleural Effusion": 1.0, "Cardiomegaly": 0.0}


def test_limitation_phrase_is_uncertain_never_positive(labeller: ReportLabeller) -> None:
    for sentence in ("Evaluation for pneumothorax is limited.", "Limited evaluation for pneumothorax.",
                     "Pneumothorax is not well assessed on this supine film."):
        assert labeller.label_sentence(sentence) == {"Pneumothorax": -1.0}, sentence
    mention = labeller.mentions("Evaluation for pneumothorax is limited.")[0]
    assert mention.trigger == "is limited"


def test_lesions_outside_the_lung_are_not_lung_lesions(labeller: ReportLabeller) -> None:
    for sentence in ("Bony lesions.", "Lytic lesion in the right humerus.", "Partially imaged liver lesions.",
                     "Soft tissue mass in the left axilla.", "Lesions of the ribs are unchanged.",
                     "Calcified nodule in the right apex."):
        assert "Lung Lesion" not in labeller.label_sentence(sentence), sentence
    assert labeller.label_sentence("Right upper lobe nodule.") == {"Lung Lesion": 1.0}


def test_old_fractures_follow_chexpert_unless_ignored() -> None:
    sentence = "Old healed left rib fractures."
    assert ReportLabeller().label_sentence(sentence) == {"Fracture": 1.0}
    acute_only = ReportLabeller(old_fractures="ignore")
    assert acute_only.label_sentence(sentence) == {}
    assert acute_only.label_sentence("Right rib fractures are healed.") == {}
    assert acute_only.label_sentence("Acute left rib fracture.") == {"Fracture": 1.0}
    with pytest.raises(ValueError, match="old_fractures"):
        ReportLabeller(old_fractures="maybe")  # type: ignore[arg-type]


def test_clips_are_not_support_devices_but_hardware_is(labeller: ReportLabeller) -> None:
    assert labeller.label_sentence("Surgical clips in the right upper quadrant.") == {}
    assert labeller.label_sentence("Orthopedic hardware in the cervical spine.") == {"Support Devices": 1.0}
    assert labeller.label_sentence("Embolization coils in the left lower lobe.") == {"Support Devices": 1.0}


@pytest.mark.parametrize("sentence", [
    "Right internal jugular line terminates in the SVC.", "Left subclavian line tip in the right atrium.",
    "Dual-chamber pacemaker.", "Pacing wires are intact.", "Median sternotomy wires.", "Prosthetic aortic valve.",
    "Tracheal stent.", "IVC filter.", "Implantable loop recorder.", "Impella device.", "Spinal fusion hardware.",
    "ECMO cannula in the right atrium.", "Ventriculoperitoneal shunt catheter along the right neck.",
    "The tube tip is 3 cm above the carina.", "Lines and tubes are unchanged.",
])
def test_support_device_lexicon(labeller: ReportLabeller, sentence: str) -> None:
    assert labeller.label_sentence(sentence) == {"Support Devices": 1.0}


@pytest.mark.parametrize("sentence", ["The visceral pleural line is seen at the apex.", "Nipple markers.",
                                      "Skin markers overlie the lower chest."])
def test_not_devices(labeller: ReportLabeller, sentence: str) -> None:
    assert "Support Devices" not in labeller.label_sentence(sentence)


def test_backward_triggers_stop_at_an_unrelated_mention(labeller: ReportLabeller) -> None:
    assert labeller.label_sentence("Small effusion, pneumothorax is not seen.") == {
        "Pleural Effusion": 1.0, "Pneumothorax": 0.0}
    assert labeller.label_sentence("Edema, effusion, or pneumothorax is not seen.") == {
        "Edema": 0.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0}
    assert labeller.label_sentence("Atelectasis versus consolidation.") == {"Atelectasis": -1.0, "Consolidation": -1.0}


def test_label_reports_cli_exposes_every_labeller_option(tmp_path: Path) -> None:
    from medvl.cli.main import build_app

    table = tmp_path / "reports.csv"
    pd.DataFrame({"id": ["a"], "report": ["FINDINGS: Old healed rib fractures. No acute cardiopulmonary process."]}
                 ).to_csv(table, index=False)
    runner = CliRunner()
    plain = runner.invoke(build_app(), ["data", "label-reports", str(table), "--out", str(tmp_path / "p.csv")])
    assert plain.exit_code == 0, plain.output
    row = pd.read_csv(tmp_path / "p.csv").iloc[0]
    assert row["Fracture"] == 1.0 and pd.isna(row["Pneumothorax"])
    flagged = runner.invoke(build_app(), ["data", "label-reports", str(table), "--out", str(tmp_path / "g.csv"),
                                          "--global-negations", "--old-fractures", "ignore", "--fallback", "none",
                                          "--anatomy-window", "4"])
    assert flagged.exit_code == 0, flagged.output
    row = pd.read_csv(tmp_path / "g.csv").iloc[0]
    assert pd.isna(row["Fracture"]) and row["Pneumothorax"] == 0.0 and row["Edema"] == 0.0
    bad = runner.invoke(build_app(), ["data", "label-reports", str(table), "--out", str(tmp_path / "b.csv"),
                                      "--old-fractures", "sometimes"])
    assert bad.exit_code == 2 and "--old-fractures must be one of positive, ignore" in bad.output
    assert not (tmp_path / "b.csv").exists()
    help_text = runner.invoke(build_app(), ["data", "label-reports", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--global-negations", "--old-fractures", "--fallback", "--anatomy-window", "--sections"):
        assert flag in help_text


def test_negex_benchmark_runs_and_medvl_is_ahead() -> None:
    pytest.importorskip("pynegex")
    from benchmarks.labeller_negex import compare

    results = compare(SENTENCES)
    assert results["medvl"]["exact"] == 1.0  # the set pins the rules (it is in-sample for medvl)
    assert results["negex"]["exact"] < 0.9 and results["mentions"]["exact"] < results["negex"]["exact"]
    assert results["negex"]["groups"]["limitation"] < 0.5  # NegEx reads limitation phrases as findings
