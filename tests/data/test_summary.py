"""Manifest summary: numbers for every task kind, texts, splits, and the problems it aggregates."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from medvl.data.dataset import FileProblem
from medvl.data.manifest import Manifest, TaskSpec, validate_manifest
from medvl.data.splits import find_group_leakage
from medvl.data.summary import render_summary, summarize_manifest


def manifest() -> Manifest:
    rows = [
        {"id": "a", "image": "a.png", "texts": ["one two three", "four"], "labels.m": [1, 0], "labels.o": 2,
         "labels.r": 1.0, "group": "p1", "split": "train", "fold": 0},
        {"id": "b", "image": "b.dcm", "texts": ["five six"], "labels.m": [1, 1], "labels.o": 0,
         "labels.r": 3.0, "group": "p1", "split": "test", "fold": -1},
        {"id": "c", "image": "c.npy", "texts": [], "labels.m": None, "labels.o": -1,
         "labels.r": float("nan"), "group": "p2", "split": "train", "fold": 1},
    ]
    tasks = [
        TaskSpec("m", "multilabel", ("x", "y"), novel_classes=("y",)),
        TaskSpec("o", "ordinal", ("g0", "g1", "g2")),
        TaskSpec("r", "regression"),
    ]
    return Manifest.from_records(rows, tasks, "/data")


def test_numbers() -> None:
    m = manifest()
    s = summarize_manifest(m, validation=validate_manifest(m), leakage=find_group_leakage(m))
    assert s["n_records"] == 3 and s["n_groups"] == 2
    assert s["image_types"] == {"image": 1, "dicom": 1, "array": 1}
    assert s["tasks"]["m"]["per_class"]["x"] == {"positive": 2, "annotated": 2, "prevalence": 1.0}
    assert s["tasks"]["m"]["per_class"]["y"]["prevalence"] == 0.5
    assert s["tasks"]["m"]["unannotated_records"] == 1
    assert s["tasks"]["m"]["positives_by_split"]["train"] == {"x": 1, "y": 0, "n": 2}
    assert s["tasks"]["o"]["per_class"]["g2"] == {"count": 1, "fraction": 0.5}
    assert s["tasks"]["o"]["unannotated_records"] == 1
    assert s["tasks"]["r"]["annotated"] == 2 and s["tasks"]["r"]["stats"]["mean"] == 2.0
    t = s["texts"]
    assert t["total_captions"] == 3 and t["records_without_text"] == 1
    assert t["words"]["max"] == 3.0 and t["captions_per_record"]["max"] == 2.0
    assert s["splits"] == {"test": 1, "train": 2}
    assert s["split_by_fold"]["train"] == {"-1": 0, "0": 1, "1": 1}
    # p1 is in train and test: leakage makes the summary not ok
    assert s["leakage"]["n_split_leaks"] == 1 and not s["ok"]


def test_problems_listed_and_rendered() -> None:
    m = manifest()
    m.records.at[0, "labels.o"] = 9
    problems = [FileProblem(1, "b", "/data/b.dcm", "file not found"), FileProblem(2, "c", "/data/c.npy", "corrupt")]
    s = summarize_manifest(m, validation=validate_manifest(m), file_problems=problems, files_checked=3)
    assert s["validation"]["n_errors"] == 1 and "'a'" in s["validation"]["errors"][0]
    assert s["files"]["missing"] == 1 and s["files"]["unreadable"] == 1
    buffer = io.StringIO()
    render_summary(s, Console(file=buffer, width=120))
    text = buffer.getvalue()
    assert "problems found" in text and "y (novel)" in text and "/data/b.dcm" in text


def test_unreadable_label_column_does_not_crash() -> None:
    m = manifest()
    m.records["labels.m"] = np.array(["bad", "bad", "bad"], dtype=object)
    s = summarize_manifest(m, validation=validate_manifest(m))
    assert "error" in s["tasks"]["m"]
    assert not s["ok"]
