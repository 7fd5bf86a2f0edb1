"""The dataset-drawn negative sampler: never a same-label or same-group record, reproducible, uniform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medvl.config.data import NegativeSamplingConfig
from medvl.data.dataset import ImageTextDataset, collate
from medvl.data.manifest import Manifest, TaskSpec
from medvl.data.negatives import DatasetNegativeSampler


def _reference_admissible(labels: np.ndarray, kind: str, groups: np.ndarray, i: int,
                          mask: np.ndarray | None = None, min_distance: float = 0.0) -> set[int]:
    """Brute-force statement of the rule in the sampler's docstring."""
    out = set()
    for j in range(len(labels)):
        if j == i or groups[j] == groups[i]:
            continue
        if kind == "multilabel":
            both = np.ones(labels.shape[1], bool) if mask is None else (mask[i] & mask[j])
            if not both.any() or not any(labels[i][c] != labels[j][c] for c in np.flatnonzero(both)):
                continue
        elif kind == "regression":
            if not (np.isfinite(labels[i]) and np.isfinite(labels[j])) or abs(labels[i] - labels[j]) <= min_distance:
                continue
        elif labels[i] < 0 or labels[j] < 0 or labels[i] == labels[j]:
            continue
        out.add(j)
    return out


@pytest.mark.parametrize("kind", ["ordinal", "multiclass", "multilabel", "regression"])
def test_never_same_label_or_same_group_and_every_admissible_record_is_reachable(kind: str) -> None:
    rng = np.random.default_rng(1)
    n = 40
    groups = rng.integers(0, 15, n).astype(str)  # several records per patient
    mask = None
    if kind == "multilabel":
        labels = (rng.random((n, 3)) < 0.4).astype(np.float32)
        mask = rng.random((n, 3)) < 0.8
    elif kind == "regression":
        labels = rng.integers(0, 4, n).astype(np.float64) + rng.random(n) * 0.1
        labels[3] = np.nan
    else:
        labels = rng.integers(0, 4, n)
        labels[5] = -1  # unlabelled
    sampler = DatasetNegativeSampler(labels, kind, groups, k=2, seed=7, label_mask=mask, min_label_distance=0.5)
    for i in range(n):
        allowed = _reference_admissible(labels, kind, groups, i, mask, 0.5)
        assert set(np.flatnonzero(sampler.admissible_mask(i)).tolist()) == allowed
        seen: set[int] = set()
        for epoch in range(60):
            drawn = sampler.draw(i, epoch)
            if not allowed:
                assert drawn.size == 0
                continue
            assert set(drawn.tolist()) <= allowed, (i, drawn)
            assert len(drawn) == 2 and (len(set(drawn.tolist())) == 2 or len(allowed) < 2)
            seen.update(drawn.tolist())
        if len(allowed) <= 6:
            assert seen == allowed
    expected_missing = [i for i in range(n) if not _reference_admissible(labels, kind, groups, i, mask, 0.5)]
    assert sampler.missing.tolist() == expected_missing


def test_draws_are_reproducible_per_seed_epoch_index_and_change_with_the_epoch() -> None:
    labels = np.arange(30) % 6
    a = DatasetNegativeSampler(labels, "ordinal", None, k=1, seed=3)
    b = DatasetNegativeSampler(labels, "ordinal", None, k=1, seed=3)
    # order of requests does not matter: each draw depends on (seed, epoch, index) only
    forward = [a.draw(i, 2).tolist() for i in range(30)]
    backward = [b.draw(i, 2).tolist() for i in reversed(range(30))][::-1]
    assert forward == backward
    assert [a.draw(i, 3).tolist() for i in range(30)] != forward
    other_seed = DatasetNegativeSampler(labels, "ordinal", None, k=1, seed=4)
    assert [other_seed.draw(i, 2).tolist() for i in range(30)] != forward


def test_draws_are_uniform_over_the_admissible_records() -> None:
    labels = np.array([0, 0, 1, 2, 2, 3])
    sampler = DatasetNegativeSampler(labels, "ordinal", None, seed=0)
    counts = np.bincount([int(sampler.draw(0, e)[0]) for e in range(4000)], minlength=6)
    assert counts[:2].sum() == 0  # itself and the other grade-0 record never
    assert np.all(np.abs(counts[2:] / 4000 - 0.25) < 0.03), counts


def test_k_larger_than_the_admissible_set_repeats_and_one_label_dataset_has_no_negative() -> None:
    sampler = DatasetNegativeSampler(np.array([0, 0, 1]), "multiclass", None, k=3)
    drawn = sampler.draw(0, 0)
    assert drawn.tolist() == [2, 2, 2]
    assert sampler.missing.tolist() == []
    single = DatasetNegativeSampler(np.zeros(4, dtype=int), "multiclass", None)
    assert single.missing.tolist() == [0, 1, 2, 3] and single.draw(1).size == 0


def _slide_manifest(root: Path, n: int = 12) -> Manifest:
    bags = root / "bags"
    bags.mkdir()
    rows = []
    for i in range(n):
        torch.save(torch.full((3, 4), float(i)), bags / f"s{i}.pt")
        grade = i % 3
        rows.append({"id": f"s{i}", "image": f"bags/s{i}.pt", "image_type": "feature_bag",
                     "texts": [f"report of slide {i}, grade {grade}."], "labels.grade": grade,
                     "group": f"patient{i // 2}", "split": "train", "fold": -1})
    return Manifest(pd.DataFrame(rows), [TaskSpec("grade", "ordinal", ("g0", "g1", "g2"))], root=root)


def test_dataset_items_carry_different_grade_negatives_from_other_patients(tmp_path: Path) -> None:
    manifest = _slide_manifest(tmp_path)
    cfg = NegativeSamplingConfig(task="grade", k=2)
    ds = ImageTextDataset(manifest, train=True, negatives=cfg, seed=5)
    grades = ds.labels("grade")
    groups = manifest.records["group"].to_numpy()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            indices, texts = item["negatives"]
            assert len(indices) == 2
            for j, text in zip(indices, texts, strict=True):
                assert grades[j] != grades[i] and groups[j] != groups[i]
                assert text == ds.texts_of(j)[0]
    batch = collate([ds[0], ds[1], ds[2]])
    assert batch["negative_index"].shape == (3, 2) and batch["negative_mask"].all()
    assert len(batch["negative_texts"]) == 6
    again = ImageTextDataset(manifest, train=True, negatives=cfg, seed=5)
    again.set_epoch(2)
    assert [again[i]["negatives"] for i in range(len(ds))] == [ds[i]["negatives"] for i in range(len(ds))]
    # evaluation datasets carry no negatives
    assert "negatives" not in ImageTextDataset(manifest, train=False, negatives=cfg)[0]


def test_dataset_lists_records_without_any_negative(tmp_path: Path) -> None:
    manifest = _slide_manifest(tmp_path, n=4)
    manifest.records["labels.grade"] = [0, 0, 0, 1]
    ds = ImageTextDataset(manifest, train=True, negatives=NegativeSamplingConfig(task="grade"))
    # s0/s1 share patient0, s2/s3 share patient1: s2's only other grade is its own patient's s3
    assert ds.records_without_negative() == ["s2"]
    item = ds[2]
    batch = collate([item, ds[0]])
    assert batch["negative_mask"].tolist() == [[False], [True]] and len(batch["negative_texts"]) == 1
