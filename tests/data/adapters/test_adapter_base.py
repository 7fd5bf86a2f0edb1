"""Shared adapter helpers: id normalisation, hash splits, uncertainty policies, record checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvl.data.adapters.base import (
    DatasetFormatError,
    apply_uncertainty_policy,
    finalise_records,
    hash_split,
    normalise_id,
)
from medvl.data.adapters.captions import available_templates, captions_for, load_template, template_texts


@pytest.mark.parametrize("value", [12, 12.0, "12", "0012", " 12 ", np.int64(12), np.float32(12.0), "12.0"])
def test_normalise_id_merges_types(value: object) -> None:
    assert normalise_id(value) == "12"


def test_normalise_id_prefix_and_errors() -> None:
    assert normalise_id("p10000032", strip_prefix="p") == "10000032"
    assert normalise_id("patient7") == "patient7"
    assert normalise_id("pXYZ", strip_prefix="p") == "pXYZ"
    for bad in (None, float("nan"), "", True, 1.5):
        with pytest.raises(DatasetFormatError):
            normalise_id(bad)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=40, unique=True), st.randoms())
def test_hash_split_is_order_and_subset_independent(groups: list[str], rnd) -> None:
    fractions = {"val": 0.2, "test": 0.3}
    full = dict(zip(groups, hash_split(groups, 5, fractions), strict=True))
    shuffled = list(groups)
    rnd.shuffle(shuffled)
    subset = shuffled[: max(1, len(shuffled) // 2)]
    assert dict(zip(subset, hash_split(subset, 5, fractions), strict=True)) == {g: full[g] for g in subset}


def test_hash_split_fractions() -> None:
    groups = [f"g{k}" for k in range(4000)]
    counts = pd.Series(hash_split(groups, 0, {"val": 0.1, "test": 0.2})).value_counts(normalize=True)
    assert abs(counts["val"] - 0.1) < 0.02 and abs(counts["test"] - 0.2) < 0.02
    with pytest.raises(ValueError, match="< 1"):
        hash_split(groups, 0, {"val": 0.5, "test": 0.5})


def test_uncertainty_policies() -> None:
    values = np.array([[1.0, -1.0, np.nan, 0.0]])
    t, m = apply_uncertainty_policy(values, "zeros")
    assert t.tolist() == [[1, 0, 0, 0]] and m.all()
    t, m = apply_uncertainty_policy(values, "ones")
    assert t.tolist() == [[1, 1, 0, 0]]
    t, m = apply_uncertainty_policy(values, "ignore", blank="ignore")
    assert m.tolist() == [[True, False, False, True]]
    t, m = apply_uncertainty_policy(values, ["zeros", "ones", "zeros", "zeros"])
    assert t.tolist() == [[1, 1, 0, 0]]
    with pytest.raises(DatasetFormatError, match=r"2\.0"):
        apply_uncertainty_policy(np.array([[2.0]]), "zeros")


def test_finalise_records_checks() -> None:
    base = pd.DataFrame({"id": ["b", "a"], "image": ["b.png", "a.png"], "group": ["1", "1"], "split": ["train", "test"]})
    with pytest.raises(DatasetFormatError, match="more than one split"):
        finalise_records(base, {}, "x")
    ok = finalise_records(base.assign(group=["1", "2"]), {}, "x")
    assert list(ok["id"]) == ["a", "b"] and ok["fold"].tolist() == [-1, -1] and ok["texts"].tolist() == [[], []]
    with pytest.raises(DatasetFormatError, match="duplicate record ids"):
        finalise_records(base.assign(id=["a", "a"], group=["1", "2"]), {}, "x")
    with pytest.raises(DatasetFormatError, match="unknown split"):
        finalise_records(base.assign(group=["1", "2"], split=["train", "validate"]), {}, "x")


def test_caption_templates() -> None:
    assert {"radiology", "chest_xray", "photo", "pathology"} <= set(available_templates())
    radiology = load_template("radiology")
    assert captions_for(["Pleural Effusion"], radiology) == ["A radiology image of pleural effusion."]
    assert captions_for([], radiology) == ["A radiology image of no finding."]
    chest = load_template("chest_xray")
    assert len(captions_for(["Effusion"], chest)) == 3 and "pleural effusion" in captions_for(["Effusion"], chest)[0]
    texts = template_texts([[1.0, 1.0], [0.0, 1.0]], ["A", "B"], radiology, masks=[[True, False], [True, True]])
    assert texts == [["A radiology image of a."], ["A radiology image of b."]]
    assert template_texts([1, -1], ["x", "y"], load_template("photo")) == [["a photo of a y."], []]
    with pytest.raises(FileNotFoundError, match="packaged templates"):
        load_template("nope")
