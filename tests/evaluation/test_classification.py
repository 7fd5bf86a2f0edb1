"""Classification metrics against scikit-learn, including absent classes and single-class splits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
)

from medvl.evaluation.classification import (
    balanced_accuracy,
    evaluate_classification,
    macro_f1,
    ordinal_predictions,
    quadratic_kappa,
)
from medvl.evaluation.embeddings import TaskInfo

MC = TaskInfo("t", "multiclass", ("a", "b", "c", "d"))


@pytest.mark.parametrize("seed", range(5))
def test_multiclass_vs_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=40)  # class "d" absent from the split
    logits = rng.normal(size=(40, 4))
    logits[:5, 3] += 5  # ... but predicted for some samples (the DLILP NaN-ACA case)
    res = evaluate_classification(logits, y, MC)
    m = res["metrics"]
    pred = logits.argmax(1)
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    with pytest.warns(UserWarning):
        assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    seen = sorted(set(y) | set(pred))
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, labels=seen, average="macro", zero_division=0))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    aucs = [roc_auc_score(y == c, probs[:, c]) for c in range(3)]
    aps = [average_precision_score(y == c, probs[:, c]) for c in range(3)]
    assert m["auroc_macro"] == pytest.approx(np.mean(aucs))
    assert m["map_macro"] == pytest.approx(np.mean(aps))
    assert res["info"]["classes_without_samples"] == ["d"]
    assert np.isfinite(m["balanced_accuracy"])


def test_balanced_accuracy_all_classes_and_single_class() -> None:
    bacc, recall = balanced_accuracy(np.array([0, 0, 0]), np.array([0, 1, 2]), 3)
    assert bacc == pytest.approx(1 / 3)
    assert np.isnan(recall[1]) and np.isnan(recall[2])
    f1, per = macro_f1(np.array([0, 0]), np.array([0, 1]), 3)
    assert f1 == pytest.approx(np.mean([2 / 3, 0.0]))
    assert np.isnan(per[2])


@pytest.mark.parametrize("seed", range(4))
def test_balanced_accuracy_over_present_or_all_classes_vs_sklearn(seed: int) -> None:
    from sklearn.metrics import balanced_accuracy_score, recall_score

    rng = np.random.default_rng(seed)
    y = rng.choice([0, 1, 3], size=40)  # class 2 (and 4) absent from the split, class 4 also never predicted
    pred = rng.integers(0, 4, size=40)
    present, _ = balanced_accuracy(y, pred, 5)
    everything, _ = balanced_accuracy(y, pred, 5, over="all")
    assert present == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    assert everything == pytest.approx(recall_score(y, pred, labels=range(5), average="macro", zero_division=0), abs=1e-12)
    assert everything == pytest.approx(present * 3 / 5, abs=1e-12)  # absent classes count 0, mean over C = 5
    full = np.arange(40) % 5  # every class present: the two definitions agree
    assert balanced_accuracy(full, pred, 5)[0] == pytest.approx(balanced_accuracy(full, pred, 5, over="all")[0])
    task = TaskInfo("t", "multiclass", tuple("abcde"))
    res = evaluate_classification(np.eye(5)[pred], y, task, scores_are="probabilities", balanced_accuracy_over="all")
    assert res["metrics"]["balanced_accuracy"] == pytest.approx(everything)
    assert res["options"]["balanced_accuracy_over"] == "all"
    with pytest.raises(ValueError, match="'over' must be one of"):
        balanced_accuracy(y, pred, 5, over="seen")


@pytest.mark.parametrize("seed", range(5))
def test_quadratic_kappa_vs_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 5, size=30)
    b = np.clip(a + rng.integers(-1, 2, size=30), 0, 4)
    assert quadratic_kappa(a, b, 5) == pytest.approx(cohen_kappa_score(a, b, weights="quadratic", labels=range(5)))
    assert quadratic_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"))


def test_quadratic_kappa_undefined_is_nan() -> None:
    assert np.isnan(quadratic_kappa(np.array([2, 2]), np.array([2, 2]), 4))


def test_ordinal_rounding_rule() -> None:
    # Balancing Act: torch.round (half to even) then clamp to [0, C-1]
    preds = ordinal_predictions(np.array([-0.7, 0.5, 1.5, 2.5, 3.49, 9.0]), 4)
    assert preds.tolist() == [0, 0, 2, 2, 3, 3]
    task = TaskInfo("g", "ordinal", ("0", "1", "2", "3"))
    y = np.array([0, 0, 2, 2, 3, 3])
    res = evaluate_classification(np.array([-0.7, 0.5, 1.5, 2.5, 3.49, 9.0]), y, task)
    assert res["metrics"]["kappa_quadratic"] == pytest.approx(1.0)
    assert res["metrics"]["accuracy"] == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_multilabel_vs_sklearn_with_empty_class_and_mask(seed: int) -> None:
    rng = np.random.default_rng(seed)
    task = TaskInfo("f", "multilabel", ("a", "b", "c", "d"))
    y = (rng.random((50, 4)) < 0.3).astype(np.float32)
    y[:, 2] = 0  # no positives for class c
    mask = rng.random((50, 4)) > 0.2
    logits = rng.normal(size=(50, 4)) + 2 * y
    res = evaluate_classification(logits, y, task, label_mask=mask)
    m = res["metrics"]
    probs = 1 / (1 + np.exp(-logits))
    aps = [average_precision_score(y[mask[:, c], c], probs[mask[:, c], c]) for c in (0, 1, 3)]
    aucs = [roc_auc_score(y[mask[:, c], c], probs[mask[:, c], c]) for c in (0, 1, 3)]
    assert m["map_macro"] == pytest.approx(np.mean(aps))
    assert m["auroc_macro"] == pytest.approx(np.mean(aucs))
    assert m["map_micro"] == pytest.approx(average_precision_score(y[mask], probs[mask]))
    assert res["info"]["classes_without_positives"] == ["c"]
    if mask.all():
        assert m["f1_micro"] == pytest.approx(f1_score(y, probs >= 0.5, average="micro"))


def test_multilabel_unmasked_f1_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    task = TaskInfo("f", "multilabel", ("a", "b", "c"))
    y = (rng.random((30, 3)) < 0.5).astype(np.float32)
    logits = rng.normal(size=(30, 3)) + y
    m = evaluate_classification(logits, y, task)["metrics"]
    pred = logits >= 0
    assert m["f1_micro"] == pytest.approx(f1_score(y, pred, average="micro"))
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert m["accuracy_elementwise"] == pytest.approx(np.mean(pred == y))
    assert m["accuracy_subset"] == pytest.approx(np.mean((pred == y).all(1)))


def test_binary_single_logit() -> None:
    task = TaskInfo("b", "multiclass", ("neg", "pos"))
    logits = np.array([-2.0, -1.0, 0.5, 3.0])
    y = np.array([0, 1, 1, 1])
    m = evaluate_classification(logits, y, task)["metrics"]
    assert m["auroc"] == pytest.approx(roc_auc_score(y, logits))
    assert m["accuracy"] == pytest.approx(0.75)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="outside"):
        evaluate_classification(np.zeros((2, 4)), np.array([0, 7]), MC)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_classification(np.full((2, 4), np.nan), np.array([0, 1]), MC)
    with pytest.raises(ValueError, match="columns"):
        evaluate_classification(np.zeros((2, 3)), np.array([0, 1]), MC)


@pytest.mark.parametrize("seed", range(6))
def test_binary_auroc_ap_with_ties_vs_sklearn(seed: int) -> None:
    from medvl.evaluation.classification import binary_auroc_ap

    rng = np.random.default_rng(seed)
    y = rng.random(60) < 0.3
    s = np.round(rng.normal(size=60) + y, 1)  # coarse scores: many ties
    auroc, ap = binary_auroc_ap(y, s)
    assert auroc == pytest.approx(roc_auc_score(y, s))
    assert ap == pytest.approx(average_precision_score(y, s))
    assert np.isnan(binary_auroc_ap(np.zeros(5, bool), s[:5])[1])
    assert np.isnan(binary_auroc_ap(np.ones(5, bool), s[:5])[0])


@pytest.mark.parametrize("seed", range(4))
def test_per_class_auroc_ap_masked_with_ties_vs_sklearn(seed: int) -> None:
    """The column-wise computation equals scikit-learn run on each class's unmasked entries."""
    from medvl.evaluation.classification import per_class_auroc_ap

    rng = np.random.default_rng(seed)
    n, c = 80, 6
    y = (rng.random((n, c)) < 0.3).astype(np.float64)
    y[:, 4] = 0.0  # a class without positives
    y[:, 5] = 1.0  # a class without negatives
    s = np.round(rng.normal(size=(n, c)) + y, 1)  # coarse scores: ties within and across groups
    mask = rng.random((n, c)) < 0.8
    y[rng.random((n, c)) < 0.05] = np.nan  # non-finite targets count as masked
    auroc, ap = per_class_auroc_ap(y, s, mask)
    for k in range(c):
        keep = mask[:, k] & np.isfinite(y[:, k])
        yk, sk = y[keep, k] > 0.5, s[keep, k]
        if yk.any() and not yk.all():
            assert auroc[k] == pytest.approx(roc_auc_score(yk, sk))
            assert ap[k] == pytest.approx(average_precision_score(yk, sk))
        else:
            assert np.isnan(auroc[k])
            assert np.isnan(ap[k]) == (not yk.any())
