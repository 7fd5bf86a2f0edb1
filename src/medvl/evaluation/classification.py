"""Classification metrics from classifier-head outputs (or any scores), with explicit edge-case rules.

Rules (recorded in every result under ``options``):

* **Scores → probabilities.** Multiclass: softmax over the C columns; a single column for a
  2-class task is a logit of class 1 (sigmoid). Multilabel: sigmoid per class. Pass
  ``scores_are="probabilities"`` to use the scores as given.
* **Confusion matrix over all classes** (``labels=range(C)``), so a class absent from the split
  never shifts the others. Balanced accuracy = ACA = mean of per-class recall
  ``cm[c,c] / Σ_j cm[c,j]`` over one of two class sets (``balanced_accuracy_over``):

  - ``"present"`` (**default**): the classes with at least one true sample in the evaluated
    split; an absent class has an undefined recall (0/0) and is left out and listed in ``info``.
    Equals ``sklearn.metrics.balanced_accuracy_score``. Default because it never charges a model
    for a class the split does not contain, and it is what scikit-learn and CLIP_benchmark report.
  - ``"all"``: all C classes of the task, an absent class counting as recall 0 — the mean is
    divided by C. Equals ``sklearn.metrics.recall_score(labels=range(C), average="macro",
    zero_division=0)``. Use it to compare splits that miss different classes on one scale.

  The two agree whenever every class occurs. Never NaN unless the split is empty.
* **Macro F1** over classes that occur in the true labels or the predictions; a class that is
  predicted but never true has F1 = 0 (precision 0). Same as sklearn with ``zero_division=0``
  on those classes.
* **AUROC / AP per class** (one-vs-rest). AUROC needs both a positive and a negative sample, AP
  needs a positive; classes without them are left out of the macro mean and listed. AP is the
  step-wise average precision (``sklearn.metrics.average_precision_score``). Micro mAP pools all
  annotated (image, class) pairs. NaN when no class qualifies.
* **Ordinal tasks.** With one output column the prediction is the regression output rounded
  half-to-even (``numpy.rint``, as ``torch.round``) and clipped to ``[0, C-1]``; with C columns it
  is the argmax. Quadratic κ uses weights ``(i-j)²`` over ``labels=range(C)``; κ is NaN when the
  expected disagreement is zero (e.g. both raters use one single grade), as in scikit-learn.
* **Partial labels.** Multilabel entries with ``label_mask`` False (or NaN labels) are ignored
  per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medvl.evaluation.embeddings import EmbeddingSet, EmbeddingSetError, TaskInfo

__all__ = [
    "ACA_CLASS_SETS",
    "balanced_accuracy",
    "binary_auroc_ap",
    "confusion_matrix",
    "evaluate_classification",
    "evaluate_embedding_heads",
    "labelled_rows",
    "macro_f1",
    "ordinal_predictions",
    "per_class_auroc_ap",
    "quadratic_kappa",
    "scores_to_probabilities",
]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x, -60, 60))), dtype=np.float64)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted class, over ``range(C)``."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {t.shape} and {p.shape}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if len(arr) and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} has values outside [0, {num_classes})")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


#: Class sets balanced accuracy (ACA) can average over; see the module docstring.
ACA_CLASS_SETS = ("present", "all")


def balanced_accuracy(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, over: str = "present"
) -> tuple[float, np.ndarray]:
    """ACA (mean per-class recall) and the per-class recall (NaN where a class has no true sample).

    ``over="present"`` (default) averages over the classes with ≥ 1 true sample
    (``sklearn.metrics.balanced_accuracy_score``); ``over="all"`` over all ``num_classes``, an
    absent class counting 0 (``recall_score(labels=range(C), average="macro", zero_division=0)``).
    """
    if over not in ACA_CLASS_SETS:
        raise ValueError(f"balanced accuracy 'over' must be one of {ACA_CLASS_SETS}, got {over!r}")
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(1)
    recall = np.full(num_classes, np.nan)
    present = support > 0
    recall[present] = np.diag(cm)[present] / support[present]
    if not present.any():
        return float("nan"), recall
    if over == "all":
        return float(np.nan_to_num(recall, nan=0.0).sum() / num_classes), recall
    return float(recall[present].mean()), recall


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[float, np.ndarray]:
    """Macro F1 over classes seen in y_true or y_pred; per-class F1 (NaN for unseen classes)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    seen = (cm.sum(0) + cm.sum(1)) > 0
    f1 = np.full(num_classes, np.nan)
    denom = 2 * tp + fp + fn
    f1[seen] = np.where(denom[seen] > 0, 2 * tp[seen] / np.maximum(denom[seen], 1), 0.0)
    return (float(f1[seen].mean()) if seen.any() else float("nan")), f1


def quadratic_kappa(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None) -> float:
    """Cohen's κ with quadratic weights over ``range(num_classes)`` (default: the sorted union of values).

    NaN when the expected disagreement is zero (κ undefined).
    """
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if len(t) == 0:
        return float("nan")
    if num_classes is None:
        values = np.union1d(t, p)
        t = np.searchsorted(values, t)
        p = np.searchsorted(values, p)
        num_classes = len(values)
    cm = confusion_matrix(t, p, num_classes).astype(np.float64)
    grades = np.arange(num_classes)
    weights = (grades[:, None] - grades[None, :]) ** 2
    expected = np.outer(cm.sum(1), cm.sum(0)) / cm.sum()
    denom = float((weights * expected).sum())
    if denom == 0:
        return float("nan")
    return float(1.0 - (weights * cm).sum() / denom)


def ordinal_predictions(scores: np.ndarray, num_classes: int) -> np.ndarray:
    """Grade predictions: round-half-to-even + clip for one column, argmax for C columns."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1 or s.shape[1] == 1:
        return np.clip(np.rint(s.reshape(-1)), 0, num_classes - 1).astype(np.int64)
    if s.shape[1] != num_classes:
        raise ValueError(f"ordinal scores must have 1 or {num_classes} columns, got {s.shape[1]}")
    return s.argmax(1).astype(np.int64)


def scores_to_probabilities(scores: np.ndarray, kind: str, num_classes: int) -> np.ndarray:
    """(N, C) probabilities from logits: softmax (multiclass/ordinal), sigmoid (multilabel, 1-col binary)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    if kind == "multilabel":
        return _sigmoid(s)
    if s.shape[1] == 1 and num_classes == 2:
        p = _sigmoid(s[:, 0])
        return np.stack([1 - p, p], axis=1)
    if s.shape[1] != num_classes:
        raise ValueError(f"{kind} scores must have {num_classes} columns, got {s.shape[1]}")
    return _softmax(s)


def binary_auroc_ap(targets: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """AUROC (trapezoidal ROC area) and step-wise AP of one binary problem, tie-aware.

    Same definitions as ``sklearn.metrics.roc_auc_score`` / ``average_precision_score``: tied
    scores form one threshold. AUROC is NaN without both classes, AP is NaN without positives.
    """
    y = np.asarray(targets, dtype=np.float64).reshape(-1, 1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    auroc, ap = per_class_auroc_ap(y, s)
    return float(auroc[0]), float(ap[0])


def per_class_auroc_ap(
    targets: np.ndarray, scores: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class AUROC and AP for (N, C) 0/1 targets; NaN where a class lacks positives (or negatives).

    All classes at once: one column-wise sort, then per row the counts at the end of its tie group
    (tied scores form one threshold, as in scikit-learn). AP = mean over positives of the precision
    at their group's end; AUROC = mean over positives of (negatives scored lower + ½ tied
    negatives) / n_neg, which equals the trapezoidal ROC area. Entries outside ``mask`` (or with
    non-finite targets) count as neither positive nor negative.
    """
    y = np.asarray(targets, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    m = np.ones_like(y, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    m = m & np.isfinite(y)
    n, n_classes = y.shape
    pos = (m & (np.nan_to_num(y) > 0.5)).astype(np.float64)
    neg = (m & ~(np.nan_to_num(y) > 0.5)).astype(np.float64)
    n_pos, n_neg = pos.sum(0), neg.sum(0)
    auroc = np.full(n_classes, np.nan)
    ap = np.full(n_classes, np.nan)
    if n == 0:
        return auroc, ap
    order = np.argsort(-s, axis=0, kind="stable")
    s_sorted = np.take_along_axis(s, order, 0)
    pos_s, neg_s = np.take_along_axis(pos, order, 0), np.take_along_axis(neg, order, 0)
    rows = np.arange(n)[:, None]
    boundary = s_sorted[1:] != s_sorted[:-1]  # (N-1, C): row i ends a tie group
    is_end = np.vstack([boundary, np.ones((1, n_classes), bool)])
    is_start = np.vstack([np.ones((1, n_classes), bool), boundary])
    group_end = np.minimum.accumulate(np.where(is_end, rows, n)[::-1], axis=0)[::-1]
    group_start = np.maximum.accumulate(np.where(is_start, rows, 0), axis=0)
    tp_cum, fp_cum = np.cumsum(pos_s, 0), np.cumsum(neg_s, 0)
    tp_end = np.take_along_axis(tp_cum, group_end, 0)
    fp_end = np.take_along_axis(fp_cum, group_end, 0)
    fp_before = np.take_along_axis(fp_cum - neg_s, group_start, 0)
    has_pos = n_pos > 0
    precision = np.divide(tp_end, tp_end + fp_end, out=np.zeros_like(tp_end), where=pos_s > 0)
    ap[has_pos] = (pos_s * precision).sum(0)[has_pos] / n_pos[has_pos]
    both = has_pos & (n_neg > 0)
    ranked_lower = pos_s * ((n_neg - fp_end) + 0.5 * (fp_end - fp_before))
    auroc[both] = ranked_lower.sum(0)[both] / (n_pos[both] * n_neg[both])
    return auroc, ap


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x[np.isfinite(x)])) if np.isfinite(x).any() else float("nan")


def _names(task: TaskInfo, values: np.ndarray) -> dict[str, float | None]:
    return {c: (None if not np.isfinite(v) else float(v)) for c, v in zip(task.classes, values, strict=True)}


def evaluate_classification(
    scores: np.ndarray,
    labels: np.ndarray,
    task: TaskInfo,
    *,
    label_mask: np.ndarray | None = None,
    scores_are: str = "logits",
    threshold: float = 0.5,
    prefix: str = "",
    balanced_accuracy_over: str = "present",
) -> dict[str, Any]:
    """Metrics for one task from (N, C) scores (or (N,)/(N, 1) for binary/ordinal regression heads).

    ``balanced_accuracy_over``: ``"present"`` or ``"all"`` classes (see the module docstring).
    Returns ``{"metrics": {...}, "options": {...}, "info": {...}}``; metric names are prefixed with
    ``prefix`` (e.g. ``"cls/<task>/"``).
    """
    if scores_are not in ("logits", "probabilities"):
        raise ValueError("scores_are must be 'logits' or 'probabilities'")
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim == 1:
        s = s[:, None]
    if len(s) != len(y):
        raise ValueError(f"task {task.name!r}: {len(s)} score rows but {len(y)} labels")
    if not np.isfinite(s).all():
        bad = np.flatnonzero(~np.isfinite(s).all(1))[:5].tolist()
        raise ValueError(f"task {task.name!r}: scores contain NaN/inf at rows {bad}")
    n_cls = task.num_classes
    m: dict[str, float] = {}
    info: dict[str, Any] = {"n_samples": len(y)}
    options: dict[str, Any] = {"kind": task.kind, "scores_are": scores_are}
    if task.kind == "regression":
        t = y.astype(np.float64).reshape(-1)
        p = s[:, 0]
        ok = np.isfinite(t)
        err = p[ok] - t[ok]
        m["mae"] = float(np.abs(err).mean()) if ok.any() else float("nan")
        m["rmse"] = float(np.sqrt((err**2).mean())) if ok.any() else float("nan")
        var = float(((t[ok] - t[ok].mean()) ** 2).sum()) if ok.any() else 0.0
        m["r2"] = float(1 - (err**2).sum() / var) if var > 0 else float("nan")
    elif task.kind == "multilabel":
        if y.ndim != 2 or y.shape[1] != n_cls:
            raise ValueError(f"task {task.name!r}: multilabel labels must be (N, {n_cls}), got {y.shape}")
        if s.shape[1] != n_cls:
            raise ValueError(f"task {task.name!r}: expected {n_cls} score columns, got {s.shape[1]}")
        yf = y.astype(np.float64)
        mask = np.isfinite(yf) if label_mask is None else (np.asarray(label_mask, bool) & np.isfinite(yf))
        probs = s if scores_are == "probabilities" else _sigmoid(s)
        auroc, ap = per_class_auroc_ap(yf, probs, mask)
        m["map_macro"] = _nanmean(ap)
        m["auroc_macro"] = _nanmean(auroc)
        m["map_micro"] = binary_auroc_ap(yf[mask] > 0.5, probs[mask])[1]
        pred = probs >= threshold
        truth = yf > 0.5
        tp = ((pred & truth) & mask).sum(0).astype(np.float64)
        fp = ((pred & ~truth) & mask).sum(0).astype(np.float64)
        fn = ((~pred & truth) & mask).sum(0).astype(np.float64)
        seen = (tp + fp + fn) > 0
        f1 = np.full(n_cls, np.nan)
        f1[seen] = 2 * tp[seen] / (2 * tp[seen] + fp[seen] + fn[seen])
        m["f1_macro"] = _nanmean(f1)
        denom = 2 * tp.sum() + fp.sum() + fn.sum()
        m["f1_micro"] = float(2 * tp.sum() / denom) if denom > 0 else float("nan")
        m["accuracy_elementwise"] = float((pred == truth)[mask].mean()) if mask.any() else float("nan")
        full_rows = mask.all(1)
        m["accuracy_subset"] = float((pred == truth)[full_rows].all(1).mean()) if full_rows.any() else float("nan")
        info.update(
            per_class_ap=_names(task, ap),
            per_class_auroc=_names(task, auroc),
            classes_without_positives=[c for c, v in zip(task.classes, ap, strict=True) if not np.isfinite(v)],
        )
        options["threshold"] = threshold
    elif task.kind in ("multiclass", "ordinal"):
        yi = np.asarray(y).reshape(-1)
        if np.issubdtype(yi.dtype, np.floating):
            if not np.isfinite(yi).all():
                raise ValueError(f"task {task.name!r}: labels contain NaN (missing labels are not allowed here)")
            if not np.all(yi == np.round(yi)):
                raise ValueError(f"task {task.name!r}: {task.kind} labels must be integers")
        yi = yi.astype(np.int64)
        if len(yi) and (yi.min() < 0 or yi.max() >= n_cls):
            bad = np.flatnonzero((yi < 0) | (yi >= n_cls))[:5].tolist()
            raise ValueError(f"task {task.name!r}: labels outside [0, {n_cls}) at rows {bad}")
        regression_head = task.kind == "ordinal" and s.shape[1] == 1
        if regression_head:
            pred = ordinal_predictions(s, n_cls)
            options["prediction_rule"] = "round half to even, clip to [0, C-1]"
        else:
            probs = s if scores_are == "probabilities" else scores_to_probabilities(s, task.kind, n_cls)
            pred = probs.argmax(1) if probs.shape[1] == n_cls else (probs[:, 1] >= threshold).astype(np.int64)
            options["prediction_rule"] = "argmax of probabilities"
            onehot = np.eye(n_cls)[yi]
            auroc, ap = per_class_auroc_ap(onehot, probs)
            m["auroc_macro"] = _nanmean(auroc)
            m["map_macro"] = _nanmean(ap)
            if n_cls == 2:
                m["auroc"] = float(auroc[1]) if np.isfinite(auroc[1]) else float("nan")
            if n_cls > 5:
                top5 = np.argsort(-probs, axis=1, kind="stable")[:, :5]
                m["accuracy_top5"] = float((top5 == yi[:, None]).any(1).mean())
            info.update(per_class_auroc=_names(task, auroc), per_class_ap=_names(task, ap))
        m["accuracy"] = float(np.mean(pred == yi)) if len(yi) else float("nan")
        bacc, recall = balanced_accuracy(yi, pred, n_cls, over=balanced_accuracy_over)
        options["balanced_accuracy_over"] = balanced_accuracy_over
        m["balanced_accuracy"] = bacc
        m["f1_macro"], f1 = macro_f1(yi, pred, n_cls)
        m["kappa_quadratic" if task.kind == "ordinal" else "kappa"] = (
            quadratic_kappa(yi, pred, n_cls) if task.kind == "ordinal" else _cohen_kappa(yi, pred, n_cls)
        )
        if task.kind == "ordinal":
            m["mae_grades"] = float(np.abs(pred - yi).mean()) if len(yi) else float("nan")
        info.update(
            per_class_recall=_names(task, recall),
            per_class_f1=_names(task, f1),
            classes_without_samples=[c for c, k in zip(task.classes, np.bincount(yi, minlength=n_cls), strict=True) if k == 0],
            confusion_matrix=confusion_matrix(yi, pred, n_cls).tolist(),
        )
    else:  # pragma: no cover - TaskInfo validates kinds
        raise EmbeddingSetError(f"unknown task kind {task.kind!r}")
    return {"metrics": {f"{prefix}{k}": v for k, v in m.items()}, "options": options, "info": info}


def _cohen_kappa(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    cm = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)
    n = cm.sum()
    if n == 0:
        return float("nan")
    po = np.trace(cm) / n
    pe = float((cm.sum(0) * cm.sum(1)).sum() / n**2)
    return float("nan") if pe == 1 else float((po - pe) / (1 - pe))


def labelled_rows(embeddings: EmbeddingSet, task: str) -> np.ndarray:
    """Boolean (N,) mask of images with a label for ``task``.

    Multiclass/ordinal: label ≥ 0 (the manifest's -1 = not annotated) and a True ``label_mask``
    when one is stored; regression: finite values. Multilabel rows are always kept (per-class
    masks are applied inside the metrics).
    """
    info = embeddings.task(task)
    y = np.asarray(embeddings.labels[task])
    if info.kind == "multilabel":
        return np.ones(len(y), dtype=bool)
    y = y.reshape(len(y), -1)[:, 0].astype(np.float64)
    keep = np.isfinite(y)
    if info.kind in ("multiclass", "ordinal"):
        keep &= np.nan_to_num(y, nan=-1.0) >= 0
    mask = embeddings.label_mask.get(task)
    if mask is not None and mask.ndim == 1:
        keep &= mask
    return keep


def evaluate_embedding_heads(
    embeddings: EmbeddingSet, tasks: Sequence[str] | None = None, *, threshold: float = 0.5,
    balanced_accuracy_over: str = "present",
) -> dict[str, Any]:
    """Classification metrics of every head output stored in ``embeddings.logits`` (per task)."""
    names = list(tasks) if tasks is not None else [t for t in embeddings.logits if t in embeddings.labels]
    metrics: dict[str, float] = {}
    options: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for name in names:
        if name not in embeddings.logits:
            raise EmbeddingSetError(f"no classifier-head logits for task {name!r} (have {sorted(embeddings.logits)})")
        if name not in embeddings.labels:
            raise EmbeddingSetError(f"no labels for task {name!r}")
        embeddings.check_labels(name)  # labels may have been replaced after construction
        keep = labelled_rows(embeddings, name)
        mask = embeddings.label_mask.get(name)
        res = evaluate_classification(
            embeddings.logits[name][keep],
            np.asarray(embeddings.labels[name])[keep],
            embeddings.task(name),
            label_mask=None if mask is None or mask.ndim == 1 else mask[keep],
            threshold=threshold,
            prefix=f"{name}/",
            balanced_accuracy_over=balanced_accuracy_over,
        )
        metrics.update(res["metrics"])
        options[name] = res["options"]
        info[name] = {**res["info"], "n_unlabelled": int((~keep).sum())}
    return {"metrics": metrics, "options": options, "info": info}
