"""Retrieval metrics against a brute-force full-matrix stable sort."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from medvl.evaluation.embeddings import EmbeddingSet, EmbeddingSetError
from medvl.evaluation.retrieval import evaluate_retrieval


def _brute(emb: EmbeddingSet, direction: str, exclude_own: bool, labels: np.ndarray | None, ks=(1, 2, 5)):
    img, txt, c2i = emb.image_emb.astype(np.float64), emb.text_emb.astype(np.float64), emb.caption_to_image
    if direction == "i2t":
        q, g, q_img, g_img = img, txt, np.arange(len(img)), c2i
    else:
        q, g, q_img, g_img = txt, img, c2i, np.arange(len(img))
    sims = q @ g.T
    ranks, prec, top1 = [], {k: [] for k in ks}, []
    for i in range(len(q)):
        order = np.argsort(-sims[i], kind="stable")  # ties: lower index first
        pos = g_img[order] == q_img[i]
        if pos.any():
            ranks.append(int(np.flatnonzero(pos)[0]) + 1)
        if labels is not None:
            kept = order[g_img[order] != q_img[i]] if exclude_own else order
            top1.append(labels[g_img[kept[0]]])
            for k in ks:
                prec[k].append(np.mean(labels[g_img[kept[:k]]] == labels[q_img[i]]))
    return np.array(ranks), prec, np.array(top1), labels[q_img] if labels is not None else None


def _multi_caption_set(rng: np.random.Generator, n_img=13, dim=6, integer=False) -> EmbeddingSet:
    n_caps = rng.integers(0, 4, size=n_img)  # 0..3 captions per image (some images without any)
    n_caps[0] = 2
    c2i = np.repeat(np.arange(n_img), n_caps)
    rng.shuffle(c2i)
    if integer:  # small integers: exact float math and many ties
        img = rng.integers(-1, 2, size=(n_img, dim)).astype(np.float32)
        txt = rng.integers(-1, 2, size=(len(c2i), dim)).astype(np.float32)
    else:
        img = rng.normal(size=(n_img, dim)).astype(np.float32)
        txt = (img[c2i] + rng.normal(scale=1.0, size=(len(c2i), dim))).astype(np.float32)
    labels = rng.integers(0, 3, size=n_img)
    return EmbeddingSet.from_arrays(img, txt, c2i, labels={"grade": labels}, tasks={"grade": {"kind": "ordinal", "classes": ["a", "b", "c"]}})


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("exclude_own", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(integer: bool, exclude_own: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    emb = _multi_caption_set(rng, integer=integer)
    res = evaluate_retrieval(
        emb, ks=(1, 2, 5), normalize=False, label_tasks=["grade"], precision_ks=(1, 2, 5), exclude_own=exclude_own, chunk_size=4
    )
    m = res["metrics"]
    labels = emb.labels["grade"]
    for d in ("i2t", "t2i"):
        ranks, prec, top1, qlab = _brute(emb, d, exclude_own, labels)
        for k in (1, 2, 5):
            assert m[f"{d}/recall@{k}"] == pytest.approx(np.mean(ranks <= k))
            assert m[f"{d}/grade/precision@{k}"] == pytest.approx(np.mean(prec[k]))
        assert m[f"{d}/mrr"] == pytest.approx(np.mean(1 / ranks))
        assert m[f"{d}/median_rank"] == pytest.approx(np.median(ranks))
        assert m[f"{d}/mean_rank"] == pytest.approx(np.mean(ranks))
        assert m[f"{d}/grade/top1_label_accuracy"] == pytest.approx(np.mean(top1 == qlab))
        expected_kappa = cohen_kappa_score(qlab, top1, weights="quadratic", labels=[0, 1, 2])
        assert m[f"{d}/grade/kappa_quadratic"] == pytest.approx(expected_kappa, nan_ok=True)
    assert res["info"]["i2t/n_queries_without_positive"] == int((np.bincount(emb.caption_to_image, minlength=13) == 0).sum())


@pytest.mark.parametrize("integer", [False, True])
def test_invariant_to_chunk_size(integer: bool) -> None:
    # Integer embeddings (exact dot products, many ties) without normalisation; random floats
    # with normalisation. BLAS may round a dot product differently for different chunk shapes,
    # so exact invariance is promised for exactly representable similarities.
    rng = np.random.default_rng(5)
    emb = _multi_caption_set(rng, n_img=40, integer=integer)
    results = [
        evaluate_retrieval(
            emb, ks=(1, 3, 10, 200), normalize=not integer, label_tasks=["grade"], precision_ks=(1, 3), chunk_size=c
        )["metrics"]
        for c in (1, 3, 7, 1000)
    ]
    for other in results[1:]:
        assert other == results[0]


def test_ties_rank_lower_index_first() -> None:
    # every caption identical: the rank of a query's caption is its gallery index + 1
    img = np.ones((4, 2), np.float32)
    txt = np.ones((4, 2), np.float32)
    res = evaluate_retrieval(EmbeddingSet.from_arrays(img, txt), ks=(1, 2), normalize=False)
    m = res["metrics"]
    assert m["i2t/mean_rank"] == pytest.approx(np.mean([1, 2, 3, 4]))
    assert m["t2i/recall@1"] == pytest.approx(0.25)
    assert m["t2i/recall@2"] == pytest.approx(0.5)


def test_perfect_and_large_k() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(30, 8)).astype(np.float32)
    res = evaluate_retrieval(EmbeddingSet.from_arrays(img, img.copy()), ks=(1, 200))
    assert res["metrics"]["i2t/recall@1"] == 1.0
    assert res["metrics"]["t2i/recall@200"] == 1.0
    assert res["metrics"]["t2i/mrr"] == 1.0


def test_multilabel_relevance_modes() -> None:
    img = np.eye(3, dtype=np.float32)
    labels = np.array([[1, 0], [1, 1], [0, 1]], dtype=np.float32)
    emb = EmbeddingSet.from_arrays(img, img.copy(), labels={"f": labels}, tasks={"f": {"kind": "multilabel", "classes": ["x", "y"]}})
    exact = evaluate_retrieval(emb, label_tasks=["f"], precision_ks=(1, 2), ks=(1,))["metrics"]
    overlap = evaluate_retrieval(emb, label_tasks=["f"], precision_ks=(1, 2), ks=(1,), multilabel_relevance="overlap")["metrics"]
    assert exact["i2t/f/precision@1"] == 1.0  # own caption retrieved first
    # top-2 = own + lowest-index tied other item (all others score 0)
    assert exact["i2t/f/precision@2"] == pytest.approx(0.5)
    # brute: image0 gets {0,1}: overlap 2/2; image1 gets {1,0}: 2/2; image2 gets {2,0}: 1/2
    assert overlap["i2t/f/precision@2"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_errors() -> None:
    emb = EmbeddingSet.from_arrays(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="direction"):
        evaluate_retrieval(emb, directions=("x2y",))
    labelled = EmbeddingSet.from_arrays(
        np.eye(3, dtype=np.float32),
        np.eye(3, dtype=np.float32),
        labels={"a": np.arange(3)},
        tasks={"a": {"kind": "multiclass", "classes": ["0", "1", "2"]}},
    )
    with pytest.raises(ValueError, match="gallery of at least"):
        evaluate_retrieval(labelled, label_tasks=["a"], precision_ks=(5,))
    with pytest.raises(Exception, match="not in the EmbeddingSet labels"):
        evaluate_retrieval(emb, label_tasks=["nope"])


def test_unlabelled_images_are_an_error_for_label_metrics() -> None:
    emb = EmbeddingSet.from_arrays(
        np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), labels={"a": np.array([0, -1, 1])},
        tasks={"a": {"kind": "multiclass", "classes": ["x", "y"]}},
    )
    with pytest.raises(Exception, match="unannotated"):
        evaluate_retrieval(emb, label_tasks=["a"], precision_ks=(1,))


def _top1_set(labels: np.ndarray, top1_of: np.ndarray, tasks: dict, **kw) -> EmbeddingSet:
    """One caption per image; image i's top-1 caption (i2t) is caption ``top1_of[i]``, all others score 0."""
    n = len(top1_of)
    img = np.eye(n + 1, dtype=np.float32)[:n]
    txt = np.zeros((n, n + 1), np.float32)
    for i, j in enumerate(top1_of):
        txt[j, i] = 1.0
    txt[txt.sum(1) == 0, n] = 1.0  # captions nobody retrieves first point elsewhere (never zero-norm)
    return EmbeddingSet.from_arrays(img, txt, labels={"g": labels}, tasks=tasks, **kw)


def test_retrieval_kappa_weights_by_grade_value_over_all_classes() -> None:
    # Grades {0, 1, 3} of an ordinal task with C = 4: confusing 1 with 3 is two grades apart.
    # Weighting by position among the observed grades {0, 1, 3} (the old bug) would make 1↔3
    # look like neighbours: κ 0.6667 instead of 0.5439 on this hand-made case.
    labels = np.array([0, 0, 1, 1, 3, 3, 0, 3])
    top1 = np.array([0, 2, 4, 4, 2, 5, 6, 7])  # retrieved labels 0 1 3 3 1 3 0 3
    emb = _top1_set(labels, top1, {"g": {"kind": "ordinal", "classes": ["0", "1", "2", "3"]}})
    m = evaluate_retrieval(emb, label_tasks=["g"], precision_ks=(1,))["metrics"]
    retrieved = labels[top1]
    reference = cohen_kappa_score(labels, retrieved, weights="quadratic", labels=[0, 1, 2, 3])
    assert m["i2t/g/kappa_quadratic"] == pytest.approx(reference, abs=1e-12)
    assert m["i2t/g/kappa_quadratic"] == pytest.approx(0.543859649122807, abs=1e-12)
    assert cohen_kappa_score(labels, retrieved, weights="quadratic") == pytest.approx(0.6666666666666667)  # the bug


def test_multilabel_exact_precision_unannotated_never_matches() -> None:
    # Image i retrieves caption i + 1 first. Pairs (0,1) agree on annotated labels; (3,4) and (5,6)
    # are equal only because both sides are unannotated in the same class. Unannotated never
    # matches: P@1 = 1/8 (counting unannotated == unannotated as a match gave 3/8).
    nan = np.nan
    labels = np.array([[1, 0], [1, 0], [0, 1], [nan, 1], [nan, 1], [0, nan], [0, nan], [nan, nan]], np.float32)
    top1 = (np.arange(8) + 1) % 8
    tasks = {"g": {"kind": "multilabel", "classes": ["a", "b"]}}
    m = evaluate_retrieval(_top1_set(labels, top1, tasks), label_tasks=["g"], precision_ks=(1,), directions=("i2t",))
    assert m["metrics"]["i2t/g/precision@1"] == pytest.approx(0.125)
    # the same with a label_mask instead of NaN (zeros where unannotated)
    mask = np.isfinite(labels)
    masked = _top1_set(np.nan_to_num(labels), top1, tasks, label_mask={"g": mask})
    m2 = evaluate_retrieval(masked, label_tasks=["g"], precision_ks=(1,), directions=("i2t",))
    assert m2["metrics"]["i2t/g/precision@1"] == pytest.approx(0.125)
    # overlap: a shared annotated positive: pairs (0,1), (2,3), (3,4) → 3/8
    m3 = evaluate_retrieval(masked, label_tasks=["g"], precision_ks=(1,), directions=("i2t",), multilabel_relevance="overlap")
    assert m3["metrics"]["i2t/g/precision@1"] == pytest.approx(0.375)


def test_label_aware_retrieval_rejects_labels_outside_the_classes() -> None:
    img = np.eye(4, dtype=np.float32)
    tasks = {"g": {"kind": "multiclass", "classes": ["x", "y", "z"]}}
    emb = EmbeddingSet.from_arrays(img, img.copy(), image_ids=["a", "b", "c", "d"], labels={"g": np.array([0, 2, 3, 1])}, tasks=tasks)
    with pytest.raises(EmbeddingSetError, match=r"outside the 3 classes.*rows 2 \('c'\)"):
        evaluate_retrieval(emb, label_tasks=["g"], precision_ks=(1,))
    frac = EmbeddingSet.from_arrays(img, img.copy(), labels={"g": np.array([0, 1.5, 2, 1])}, tasks=tasks)
    with pytest.raises(EmbeddingSetError, match=r"not integers at rows 1"):
        evaluate_retrieval(frac, label_tasks=["g"], precision_ks=(1,))
    with pytest.raises(EmbeddingSetError, match=r"0 or 1.*rows 1 \('1'\)"):  # an EmbeddingSet refuses them (issue 12)
        EmbeddingSet.from_arrays(img, img.copy(), labels={"g": np.array([[0, 1], [2, 0], [0, 0], [1, 1]])},
                                 tasks={"g": {"kind": "multilabel", "classes": ["x", "y"]}})


def test_zero_norm_rows_are_rejected_naming_the_row() -> None:
    img = np.eye(4, dtype=np.float32)
    txt = img.copy()
    txt[2] = 0.0
    emb = EmbeddingSet.from_arrays(img, txt, image_ids=["a", "b", "c", "d"])
    with pytest.raises(EmbeddingSetError, match=r"text_emb.*rows 2 \('caption of image c'\) have zero norm"):
        evaluate_retrieval(emb)
    img0 = img.copy()
    img0[1] = 0.0
    with pytest.raises(EmbeddingSetError, match=r"image_emb: rows 1 \('b'\) have zero norm"):
        evaluate_retrieval(EmbeddingSet.from_arrays(img0, img.copy(), image_ids=["a", "b", "c", "d"]))
    # a dot-product evaluation (normalize=False) has no direction to lose: zero rows score 0 by definition
    assert evaluate_retrieval(emb, normalize=False)["metrics"]["i2t/recall@1"] == pytest.approx(0.75)
