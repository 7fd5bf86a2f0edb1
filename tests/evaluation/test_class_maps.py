"""Class-name maps for prototype zero-shot: DLILP's COVID = mean of the Lung Opacity and Consolidation prototypes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medvl.config.evaluation import EvaluationConfig
from medvl.evaluation.embeddings import EmbeddingSet
from medvl.evaluation.suite import evaluate_embeddings
from medvl.evaluation.zeroshot import ClassMap, PromptError, load_class_map, mapped_prototype_scores


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_mapped_score_is_cosine_with_the_normalised_mean_of_raw_prototypes() -> None:
    rng = np.random.default_rng(0)
    source = ["No Finding", "Lung Opacity", "Consolidation", "Pneumonia"]
    prototypes = rng.normal(size=(4, 6)) * np.array([[1.0], [3.0], [0.5], [2.0]])  # raw, unequal norms
    x = rng.normal(size=(5, 6))
    scale = 7.0
    scores = scale * _normalise(x) @ _normalise(prototypes).T  # what the prototype head outputs
    cmap = ClassMap("t", "chexpert", {"COVID": ("Lung Opacity", "Consolidation"), "Normal": ("No Finding",)})
    out, used = mapped_prototype_scores(scores, source, ["COVID", "Normal", "Pneumonia"], cmap, prototypes @ prototypes.T)
    covid = _normalise(prototypes[1] + prototypes[2])  # the reference: build the mean prototype explicitly
    np.testing.assert_allclose(out[:, 0], scale * _normalise(x) @ covid, rtol=1e-12)
    np.testing.assert_allclose(out[:, 1], scores[:, 0])
    np.testing.assert_allclose(out[:, 2], scores[:, 3])  # unlisted class: matched by name
    assert used["COVID"] == ["prototype:Lung Opacity", "prototype:Consolidation"]
    assert not np.allclose(out[:, 0], scores[:, [1, 2]].mean(1))  # averaging scores would be a different rule
    with pytest.raises(PromptError, match="needs the prototype vectors"):
        mapped_prototype_scores(scores, source, ["COVID"], cmap, None)
    with pytest.raises(PromptError, match="'Mystery' maps to no prototype"):
        mapped_prototype_scores(scores, source, ["Mystery"], cmap, None)


def test_builtin_dlilp_covid_map() -> None:
    cmap = load_class_map("dlilp_covid")
    assert cmap.classes["COVID"] == ("Lung Opacity", "Consolidation") and cmap.source_task == "chexpert"
    assert len(cmap.source_classes) == 14


def test_suite_scores_an_unseen_task_through_a_class_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    prototypes = _normalise(rng.normal(size=(4, 8)))
    y = np.arange(30) % 3  # COVID, Normal, Pneumonia
    centre = np.stack([prototypes[1] + prototypes[2], prototypes[0], prototypes[3]])
    x = centre[y] + 0.05 * rng.normal(size=(30, 8))
    scores = 10 * _normalise(x) @ prototypes.T
    emb = EmbeddingSet.from_arrays(x.astype(np.float32), np.zeros((0, 8), np.float32), np.zeros(0, np.int64),
                                   labels={"covid": y}, tasks={"covid": {"kind": "multiclass", "classes": ["COVID", "Normal", "Pneumonia"]}})
    emb.logits["prototypes/chexpert"] = scores.astype(np.float32)
    emb.meta["prototype_gram"] = {"chexpert": (prototypes @ prototypes.T).tolist()}
    (tmp_path / "map.yaml").write_text("source_task: chexpert\nsource_classes: [No Finding, Lung Opacity, Consolidation, Pneumonia]\n"
                                       "classes:\n  COVID: [Lung Opacity, Consolidation]\n  Normal: No Finding\n")
    cfg = EvaluationConfig.model_validate({"tasks": ["zeroshot"], "zeroshot": {"mode": "prototypes", "subsets": ["base"],
                                                                               "class_maps": {"covid": str(tmp_path / "map.yaml")}}})
    result = evaluate_embeddings(emb, cfg)["zeroshot"]
    assert result["metrics"]["covid/base/accuracy"] == 1.0
