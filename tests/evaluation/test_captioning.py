"""Caption metrics (pycocoevalcap) on hand-made pairs, and clinical efficacy with the report labeller."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.evaluation.captioning import (
    caption_metrics,
    ce_baselines,
    ce_truth_from_labels,
    clinical_efficacy,
    coco_tokenize,
)

pytest.importorskip("pycocoevalcap")


def test_tokenisation_drops_punctuation_like_the_ptb_tokenizer() -> None:
    assert coco_tokenize("Small RIGHT pleural effusion, 12-mm; patient's heart.") == \
        "small right pleural effusion 12-mm patient's heart"


def test_hand_made_pair_by_hand_and_by_the_library() -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    gen, ref = "The heart is normal in size.", "The heart is normal size."
    m = caption_metrics([gen], [[ref]])
    # by hand: 6 candidate tokens, 5 reference tokens, LCS = 5, 5/6 unigrams and 3/5 bigrams match, no brevity penalty
    assert m["bleu_1"] == pytest.approx(5 / 6, rel=1e-6)
    assert m["bleu_2"] == pytest.approx((5 / 6 * 3 / 5) ** 0.5, rel=1e-6)
    p, r, beta2 = 5 / 6, 1.0, 1.2**2
    assert m["rouge_l"] == pytest.approx((1 + beta2) * p * r / (r + beta2 * p), rel=1e-9)
    # and exactly what the library returns on the same tokens
    gts, res = {0: ["the heart is normal size"]}, {0: ["the heart is normal in size"]}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [m[f"bleu_{n}"] for n in (1, 2, 3, 4)] == pytest.approx(bleu)
    assert m["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0])


def test_cider_on_a_small_corpus_equals_the_library() -> None:
    from pycocoevalcap.cider.cider import Cider

    gen = ["small right pleural effusion", "no pneumothorax", "moderate cardiomegaly with edema"]
    refs = [["small right pleural effusion."], ["no pneumothorax is seen."], ["moderate cardiomegaly."]]
    expected, _ = Cider().compute_score({i: [coco_tokenize(r[0])] for i, r in enumerate(refs)},
                                        {i: [g] for i, g in enumerate(gen)})
    assert caption_metrics(gen, refs)["cider"] == pytest.approx(float(expected))
    identical = caption_metrics([r[0] for r in refs], refs)
    assert identical["bleu_1"] == pytest.approx(1.0, abs=1e-6) and identical["rouge_l"] == pytest.approx(1.0)


def test_caption_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="reference"):
        caption_metrics(["a"], [[""]])
    with pytest.raises(ValueError, match="2 generated"):
        caption_metrics(["a", "b"], [["a"]])


def test_clinical_efficacy_against_image_labels() -> None:
    classes = ["cardiomegaly", "pleural_effusion", "consolidation", "nodule", "mass"]
    labels = np.array([[0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 1, 0], [0, 0, 1, 0, 0]], dtype=float)
    truth, names = ce_truth_from_labels(labels, classes)
    assert names == ["Cardiomegaly", "Consolidation/Pneumonia", "Lung Lesion", "Pleural Effusion", "No Finding"]
    generated = ["Small right pleural effusion.", "No acute cardiopulmonary abnormality.", "Moderate cardiomegaly.",
                 "Right lower lobe pneumonia."]
    ce = clinical_efficacy(generated, truth, names)
    per = ce["per_class"]
    assert per["Pleural Effusion"]["f1"] == 1.0 and per["No Finding"]["f1"] == 1.0
    assert per["Consolidation/Pneumonia"]["f1"] == 1.0  # pneumonia counts for the consolidation group
    assert per["Lung Lesion"]["recall"] == 0.0 and per["Cardiomegaly"]["precision"] == 1.0
    # truths: effusion, no finding, cardiomegaly, lesion, consolidation; found all but the lesion, nothing false
    assert ce["metrics"]["precision_micro"] == 1.0
    assert ce["metrics"]["recall_micro"] == pytest.approx(4 / 5)
    always_normal = clinical_efficacy(["No acute abnormality."] * 4, truth, names)["metrics"]
    assert always_normal["f1_micro"] < ce["metrics"]["f1_micro"]


def test_ce_baselines_equal_a_normal_report_and_shuffled_truth() -> None:
    """always-normal = the labeller's reading of a normal report for every record; shuffled = the same
    texts against permuted truth, averaged over the seeded permutations (recomputed here by hand)."""
    classes = ["cardiomegaly", "pleural_effusion", "consolidation", "nodule", "mass"]
    rng = np.random.default_rng(3)
    labels = (rng.random((24, 5)) < 0.3).astype(float)
    truth, names = ce_truth_from_labels(labels, classes)
    sentences = ["Small right pleural effusion.", "Moderate cardiomegaly.", "Right lower lobe pneumonia.",
                 "No acute cardiopulmonary abnormality."]
    generated = [sentences[i % 4] for i in range(24)]
    base = ce_baselines(generated, truth, names, shuffles=5, seed=7)
    normal = clinical_efficacy(["No acute cardiopulmonary abnormality."] * 24, truth, names)["metrics"]
    assert base["always_normal/f1_micro"] == pytest.approx(normal["f1_micro"])
    assert base["always_normal/f1_macro"] == pytest.approx(normal["f1_macro"])
    perm_rng = np.random.default_rng(7)
    by_hand = [clinical_efficacy(generated, truth[perm_rng.permutation(24)], names)["metrics"] for _ in range(5)]
    assert base["shuffled/f1_micro"] == pytest.approx(np.mean([m["f1_micro"] for m in by_hand]))
    assert base["shuffled/f1_macro"] == pytest.approx(np.mean([m["f1_macro"] for m in by_hand]))
    # texts that follow the truth beat the shuffled baseline; 0 shuffles leaves it out
    matched = ["Moderate cardiomegaly." if t[names.index("Cardiomegaly")] else "No acute abnormality." for t in truth]
    assert clinical_efficacy(matched, truth, names)["metrics"]["f1_micro"] > ce_baselines(
        matched, truth, names, shuffles=5)["shuffled/f1_micro"]
    assert "shuffled/f1_micro" not in ce_baselines(generated, truth, names, shuffles=0)
    with pytest.raises(ValueError, match="truth has shape"):
        ce_baselines(generated[:3], truth, names)


def test_unmappable_class_is_named() -> None:
    with pytest.raises(ValueError, match="'tumour_grade'"):
        ce_truth_from_labels(np.zeros((1, 1)), ["tumour_grade"])
