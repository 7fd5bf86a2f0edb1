"""VQA as classification over the answer set: fusion head on separable embeddings, accuracy by type."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.evaluation.vqa import (
    VQASet,
    answer_vocabulary,
    normalize_answer,
    predict_answers,
    train_vqa_head,
    vqa_accuracy,
)

ANSWERS = {(0, 0): "yes", (1, 0): "no", (2, 0): "yes", (3, 0): "no",
           (0, 1): "left", (1, 1): "right", (2, 1): "bilateral", (3, 1): "left"}


def _separable(n: int, seed: int, unseen: bool = False) -> VQASet:
    """Answer = f(image cluster, question kind); clusters are well separated in 16 dims."""
    rng = np.random.default_rng(seed)
    image_protos = np.eye(16)[:4] * 3
    question_protos = np.eye(16)[4:6] * 3
    img_c, q_c = rng.integers(0, 4, n), rng.integers(0, 2, n)
    image = image_protos[img_c] + rng.normal(0, 0.05, (n, 16))
    question = question_protos[q_c] + rng.normal(0, 0.05, (n, 16))
    answers = [ANSWERS[(int(i), int(q))] for i, q in zip(img_c, q_c, strict=True)]
    if unseen:  # every second answer is one the training set never had
        answers = [a if k % 2 == 0 else "never seen" for k, a in enumerate(answers)]
    types = ["closed" if q == 0 else "open" for q in q_c]
    qtypes = ["presence" if q == 0 else "laterality" for q in q_c]
    return VQASet(image.astype(np.float32), question.astype(np.float32), answers, types, qtypes,
                  [f"r{k}" for k in range(n)])


def test_separable_embeddings_are_answered_perfectly() -> None:
    train, test = _separable(200, 0), _separable(100, 1)
    vocab = answer_vocabulary(train.answers)
    head = train_vqa_head(train, vocab, epochs=40, hidden_dim=32, lr=1e-2, seed=0)
    acc = vqa_accuracy(predict_answers(head, test, vocab), test.answers, test.answer_types, test.question_types)
    assert acc["accuracy"] == 1.0 and acc["accuracy_open"] == 1.0 and acc["accuracy_closed"] == 1.0
    assert acc["accuracy/laterality"] == 1.0 and acc["n"] == 100


def test_answers_outside_the_answer_set_count_as_wrong() -> None:
    train, test = _separable(200, 0), _separable(100, 1, unseen=True)
    vocab = answer_vocabulary(train.answers)
    head = train_vqa_head(train, vocab, epochs=40, hidden_dim=32, lr=1e-2, seed=0)
    acc = vqa_accuracy(predict_answers(head, test, vocab), test.answers, test.answer_types, test.question_types)
    assert acc["accuracy"] == pytest.approx(0.5)


def test_accuracy_by_type_by_hand() -> None:
    acc = vqa_accuracy(["yes", "left", "no", "mild"], ["Yes.", "right", "no", "mild"],
                       ["closed", "closed", "closed", "open"], ["presence", "laterality", "presence", "severity"])
    assert acc["accuracy"] == 0.75 and acc["accuracy_closed"] == pytest.approx(2 / 3)
    assert acc["accuracy_open"] == 1.0 and acc["accuracy/laterality"] == 0.0 and acc["n_closed"] == 3


def test_training_is_seeded() -> None:
    train, test = _separable(60, 0), _separable(30, 1)
    vocab = answer_vocabulary(train.answers)
    a = predict_answers(train_vqa_head(train, vocab, epochs=3, seed=4), test, vocab)
    b = predict_answers(train_vqa_head(train, vocab, epochs=3, seed=4), test, vocab)
    assert a == b


def test_bad_inputs_are_named() -> None:
    bad = np.ones((2, 4), np.float32)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="r1"):
        VQASet(bad, np.ones((2, 4), np.float32), ["a", "b"], ["open"] * 2, ["x"] * 2, ["r0", "r1"])
    with pytest.raises(ValueError, match="2 answers"):
        VQASet(np.ones((1, 4)), np.ones((1, 3)), ["a", "b"], ["open"], ["x"])
    assert normalize_answer("  Left  Lung. ") == "left lung"
