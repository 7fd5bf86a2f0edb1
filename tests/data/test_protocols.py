"""Transfer protocols as data: balanced subsets (exact, seeded) and CXR label harmonisation on hand-made labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medvl.cli.main import build_app
from medvl.data.harmonise import HarmonisationError, harmonise, load_harmonisation
from medvl.data.manifest import Manifest, TaskSpec, read_manifest, write_manifest
from medvl.data.subsets import SubsetError, balanced_subset, parse_per_class

FIVE = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


def _multilabel(n_per: int = 30, seed: int = 0) -> Manifest:
    """Records with exactly one of the five positive, plus decoys with two positives or one unannotated."""
    rng = np.random.default_rng(seed)
    classes = (*FIVE, "Pneumonia")
    rows = []
    for k in range(len(FIVE) * n_per):
        vec = [0.0] * 6
        vec[k % 5] = 1.0
        rows.append({"id": f"r{k:04d}", "image": "x.png", "group": f"p{k // 2}", "split": "test" if k % 3 else "train",
                     "labels.cxr": vec, "label_mask.cxr": [True] * 6})
    rows.append({"id": "two", "image": "x.png", "group": "q1", "split": "test", "labels.cxr": [1, 1, 0, 0, 0, 0.0],
                 "label_mask.cxr": [True] * 6})
    rows.append({"id": "masked", "image": "x.png", "group": "q2", "split": "test", "labels.cxr": [1, 0, 0, 0, 0, 0.0],
                 "label_mask.cxr": [True, False, True, True, True, True]})
    rows.append({"id": "pneu", "image": "x.png", "group": "q3", "split": "test", "labels.cxr": [1, 0, 0, 0, 0, 1.0],
                 "label_mask.cxr": [True] * 6})
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=int(rng.integers(1000))).reset_index(drop=True)
    return Manifest(frame, {"cxr": TaskSpec("cxr", "multilabel", classes)}, Path("."))


def test_balanced_subset_is_exact_and_single_label() -> None:
    result = balanced_subset(_multilabel(), "cxr", list(FIVE), 12, seed=3)
    spec = result.tasks["cxr_5x12"]
    assert spec.kind == "multiclass" and spec.classes == FIVE
    counts = np.bincount(result.label_matrix("cxr_5x12"), minlength=5)
    assert counts.tolist() == [12] * 5
    assert not {"two", "masked"} & set(result.records["id"])  # two positives / unannotated class: not eligible
    full = result.label_matrix("cxr")
    assert (full[np.arange(len(result)), result.label_matrix("cxr_5x12")] == 1).all()
    strict = balanced_subset(_multilabel(), "cxr", list(FIVE), 30, others_negative=True)
    assert "pneu" not in set(strict.records["id"])


def test_balanced_subset_is_seeded_and_row_order_independent() -> None:
    a = balanced_subset(_multilabel(seed=0), "cxr", list(FIVE), 10, seed=7)
    b = balanced_subset(_multilabel(seed=1), "cxr", list(FIVE), 10, seed=7)  # same records, other row order
    assert sorted(a.records["id"]) == sorted(b.records["id"])
    c = balanced_subset(_multilabel(seed=0), "cxr", list(FIVE), 10, seed=8)
    assert sorted(a.records["id"]) != sorted(c.records["id"])
    smaller = balanced_subset(_multilabel(seed=0), "cxr", list(FIVE), 5, seed=7)  # a prefix of the same ranking
    assert set(smaller.records["id"]) <= set(a.records["id"])


def test_balanced_subset_per_split_groups_and_errors() -> None:
    m = _multilabel()
    per_split = balanced_subset(m, "cxr", ["Edema", "Atelectasis"], {"train": 3, "test": 6}, new_task="two",
                                novel=["Edema"])
    records = per_split.records
    assert records.groupby(["split", "labels.two"]).size().to_dict() == {("test", 0): 6, ("test", 1): 6,
                                                                        ("train", 0): 3, ("train", 1): 3}
    assert per_split.tasks["two"].classes == ("Edema", "Atelectasis") and per_split.tasks["two"].novel_classes == ("Edema",)
    one = balanced_subset(m, "cxr", list(FIVE), 5, one_per_group=True)
    assert one.records["group"].is_unique
    with pytest.raises(SubsetError, match=r"class 'Cardiomegaly' of task 'cxr' has 30 eligible records, fewer than the 31"):
        balanced_subset(m, "cxr", list(FIVE), 31)
    with pytest.raises(SubsetError, match=r"no class\(es\) \['Effusion'\]"):
        balanced_subset(m, "cxr", ["Effusion"], 2)
    assert parse_per_class("train=350,test=60") == {"train": 350, "test": 60} and parse_per_class("200") == 200


def test_balanced_subset_of_a_multiclass_task() -> None:
    frame = pd.DataFrame({"id": [f"i{k}" for k in range(40)], "image": "x.png", "group": [f"g{k}" for k in range(40)],
                          "split": "test", "labels.covid": [k % 4 for k in range(40)]})
    m = Manifest(frame, {"covid": TaskSpec("covid", "multiclass", ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"))},
                 Path("."))
    sub = balanced_subset(m, "covid", ["Normal", "COVID"], 4, new_task="covid2")
    assert sub.label_matrix("covid2").tolist() == [0] * 4 + [1] * 4
    assert (sub.label_matrix("covid")[:4] == 2).all() and (sub.label_matrix("covid")[4:] == 0).all()


def test_subset_command_writes_the_manifest(tmp_path: Path) -> None:
    write_manifest(_multilabel(), tmp_path / "m.parquet")
    result = CliRunner().invoke(build_app(), ["data", "subset", str(tmp_path / "m.parquet"), "--out", str(tmp_path / "s.parquet"),
                                              "--task", "cxr", "--classes", ",".join(FIVE), "--per-class", "8"])
    assert result.exit_code == 0, result.output
    assert np.bincount(read_manifest(tmp_path / "s.parquet").label_matrix("cxr_5x8")).tolist() == [8] * 5
    short = CliRunner().invoke(build_app(), ["data", "subset", str(tmp_path / "m.parquet"), "--out", str(tmp_path / "t.parquet"),
                                             "--task", "cxr", "--classes", "Edema", "--per-class", "99"])
    assert short.exit_code == 2 and "fewer than the 99" in short.output and not (tmp_path / "t.parquet").exists()


def test_harmonise_nih_multilabel_with_masks() -> None:
    classes = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
               "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
    rows = [[0.0] * 14 for _ in range(3)]
    rows[0][2] = 1.0  # Effusion
    rows[1][12] = 1.0  # Pleural_Thickening
    frame = pd.DataFrame({"id": ["a", "b", "c"], "image": "x.png", "group": ["a", "b", "c"], "split": "test",
                          "labels.nih": rows})
    m = Manifest(frame, {"nih": TaskSpec("nih", "multilabel", classes)}, Path("."))
    out, info = harmonise(m, "nih")
    shared = out.tasks["cxr"].classes
    labels, mask = out.label_matrix("cxr"), out.label_mask("cxr")
    col = {c: i for i, c in enumerate(shared)}
    assert labels[0, col["Pleural Effusion"]] == 1 and labels[1, col["Pleural Thickening"]] == 1
    assert mask[2, col["Pleural Effusion"]] and labels[2, col["Pleural Effusion"]] == 0  # annotated negative
    for absent in ("No Finding", "Lung Opacity", "Support Devices", "Fracture"):  # NIH says nothing: masked
        assert not mask[:, col[absent]].any()
    assert info["left_out_source_classes"] == [] and "Hernia" in info["annotated_classes"]


def test_harmonise_or_combines_padchest_synonyms_and_leaves_unknown_out() -> None:
    classes = ("pleural effusion", "rib fracture", "clavicle fracture", "scoliosis")
    frame = pd.DataFrame({"id": ["a", "b", "c"], "image": "x.png", "group": ["a", "b", "c"], "split": "train",
                          "labels.padchest": [[0, 1, 0, 1.0], [0, 0, 0, 0.0], [0, 0, 1, 0.0]],
                          "label_mask.padchest": [[True] * 4, [True] * 4, [True, True, False, True]]})
    m = Manifest(frame, {"padchest": TaskSpec("padchest", "multilabel", classes)}, Path("."))
    out, info = harmonise(m, "padchest", new_task="shared")
    col = out.tasks["shared"].classes.index("Fracture")
    labels, mask = out.label_matrix("shared"), out.label_mask("shared")
    assert labels[:, col].tolist() == [1, 0, 0]
    assert mask[:, col].tolist() == [True, True, False]  # c: rib negative but clavicle unannotated → unknown
    assert info["left_out_source_classes"] == ["scoliosis"]


def test_harmonise_multiclass_rsna_and_table_errors(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["a", "b", "c"], "image": "x.png", "group": ["a", "b", "c"], "split": "test",
                          "labels.pneumonia": [1, 0, -1]})
    m = Manifest(frame, {"pneumonia": TaskSpec("pneumonia", "multiclass", ("no pneumonia", "pneumonia"))}, Path("."))
    out, _ = harmonise(m, "rsna")
    col = out.tasks["cxr"].classes.index("Pneumonia")
    assert out.label_matrix("cxr")[:, col].tolist() == [1, 0, 0]
    assert out.label_mask("cxr")[:, col].tolist() == [True, True, False]
    assert out.label_mask("cxr").sum() == 2  # RSNA annotates only Pneumonia
    with pytest.raises(HarmonisationError, match="reads task 'nih'"):
        harmonise(m, "nih")
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [A]\ndatasets:\n  x: {task: t, map: {a: B}}\n")
    with pytest.raises(HarmonisationError, match=r"x\.a: maps to unknown shared class\(es\) \['B'\]"):
        load_harmonisation(bad)
    table = load_harmonisation("cxr")
    assert table.datasets["mimic"].mapping == table.datasets["chexpert"].mapping
    assert {"chexpert", "mimic", "nih", "padchest", "vindr", "rsna", "siim"} <= set(table.datasets)
