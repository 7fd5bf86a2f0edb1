"""EmbeddingSet: validation, subset, safetensors+JSON round trip, aggregation helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medvl.evaluation.aggregate import aggregate_metrics, summarize_values
from medvl.evaluation.embeddings import EmbeddingSet, EmbeddingSetError


def _make() -> EmbeddingSet:
    rng = np.random.default_rng(0)
    return EmbeddingSet.from_arrays(
        torch.randn(4, 3),
        rng.normal(size=(6, 3)),
        caption_to_image=[0, 0, 1, 2, 3, 3],
        image_ids=["a", "b", "c", "d"],
        labels={"cls": np.array([0, 1, 2, 1]), "ml": np.eye(4, 2, dtype=np.float32)},
        tasks={"cls": {"kind": "multiclass", "classes": ["x", "y", "z"]}, "ml": {"kind": "multilabel", "classes": ["p", "q"]}},
        label_mask={"ml": np.ones((4, 2), bool)},
        logits={"cls": rng.normal(size=(4, 3))},
        image_features=rng.normal(size=(4, 5)),
        texts=["t0", "t1", "t2", "t3", "t4", "t5"],
        meta={"model": "m"},
    )


def test_round_trip(tmp_path: Path) -> None:
    emb = _make()
    emb.save(tmp_path / "e")
    back = EmbeddingSet.load(tmp_path / "e")
    np.testing.assert_array_equal(back.image_emb, emb.image_emb)
    np.testing.assert_array_equal(back.caption_to_image, emb.caption_to_image)
    np.testing.assert_array_equal(back.labels["ml"], emb.labels["ml"])
    assert back.label_mask["ml"].dtype == bool
    np.testing.assert_array_equal(back.logits["cls"], emb.logits["cls"])
    assert back.image_ids == emb.image_ids and back.texts == emb.texts
    assert back.meta["model"] == "m" and back.task("cls").classes == ("x", "y", "z")
    assert back.image_features is not None and back.text_features is None


def test_subset_reindexes_captions() -> None:
    sub = _make().subset([3, 1])
    assert sub.image_ids == ["d", "b"]
    assert sub.caption_to_image.tolist() == [1, 0, 0]
    assert sub.texts == ["t2", "t4", "t5"]
    assert sub.labels["cls"].tolist() == [1, 1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"caption_to_image": [0, 0, 1, 2, 3, 9]}, "outside"),
        ({"image_ids": ["a", "a", "b", "c"]}, "not unique"),
        ({"image_emb": np.full((4, 3), np.nan)}, "NaN"),
        ({"text_emb": np.zeros((6, 2))}, "dim"),
    ],
)
def test_validation_errors(kwargs: dict, match: str) -> None:
    base = {
        "image_emb": np.zeros((4, 3)),
        "text_emb": np.zeros((6, 3)),
        "caption_to_image": [0, 0, 1, 2, 3, 3],
        "image_ids": ["a", "b", "c", "d"],
    }
    base.update(kwargs)
    with pytest.raises(EmbeddingSetError, match=match):
        EmbeddingSet.from_arrays(**base)


def test_load_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingSetError, match="missing"):
        EmbeddingSet.load(tmp_path)


def test_aggregate() -> None:
    s = summarize_values([1.0, 2.0, 3.0, 4.0, float("nan")])
    assert s["mean"] == 2.5 and s["median"] == 2.5 and s["n_missing"] == 1
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s["q1"] == pytest.approx(np.quantile([1, 2, 3, 4], 0.25))
    agg = aggregate_metrics([{"a": 1.0}, {"a": 3.0, "b": 1.0}])
    assert agg["a"]["mean"] == 2.0 and agg["b"]["n"] == 1 and agg["b"]["n_missing"] == 1
