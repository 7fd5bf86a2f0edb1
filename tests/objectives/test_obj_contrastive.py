"""CLIP, SigLIP and triplet terms against direct formulas, including gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from objectives_reference import clip_reference, siglip_reference, triplet_reference

from medvl.objectives import (
    ClipLoss,
    MissingInputError,
    ObjectiveInputError,
    SigLipLoss,
    TripletLoss,
    UniCLLoss,
)
from medvl.objectives.base import NoNegativeError, NoNegativeWarning
from medvl.objectives.contrastive import clip_loss, labels_differ, select_negatives, siglip_loss

# Balancing Act / DLILP initial scale: exp(log(1/0.07)) (reference notes A.4, B.3).
SCALE_INIT = 1.0 / 0.07


def _pair(b: int = 5, d: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, d, generator=g, dtype=torch.float64),
        torch.randn(b, d, generator=g, dtype=torch.float64),
    )


def test_clip_matches_direct_formula_and_gradients() -> None:
    image, text = _pair()
    image.requires_grad_(True)
    text.requires_grad_(True)
    scale = torch.tensor(SCALE_INIT, dtype=torch.float64, requires_grad=True)
    ours = clip_loss(image, text, scale)
    ref = clip_reference(image, text, scale)
    torch.testing.assert_close(ours, ref)
    g_ours = torch.autograd.grad(ours, (image, text, scale))
    g_ref = torch.autograd.grad(ref, (image, text, scale))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b)


def test_clip_gradcheck() -> None:
    image, text = _pair(4, 3)
    scale = torch.tensor(3.0, dtype=torch.float64)
    args = (image.requires_grad_(), text.requires_grad_(), scale.requires_grad_())
    assert torch.autograd.gradcheck(lambda i, t, s: clip_loss(i, t, s), args)


def test_clip_equal_logits_give_log_batch_size() -> None:
    # With scale 0 every logit is 0, so each softmax is uniform: L = ln B exactly.
    image, text = _pair(7)
    assert clip_loss(image, text, 0.0).item() == pytest.approx(math.log(7), abs=1e-12)


def test_clip_normalises_inside_the_loss() -> None:
    image, text = _pair()
    scaled = clip_loss(image * 10.0, text * 0.1, 5.0)
    torch.testing.assert_close(scaled, clip_loss(image, text, 5.0))
    raw = clip_loss(image, text, 5.0, normalize=False)
    assert not torch.allclose(raw, scaled)


def test_clip_pair_mask_equals_loss_on_subset() -> None:
    image, text = _pair(6)
    mask = torch.tensor([True, False, True, True, False, True])
    torch.testing.assert_close(
        clip_loss(image, text, 4.0, pair_mask=mask), clip_loss(image[mask], text[mask], 4.0)
    )
    one = torch.zeros(6, dtype=torch.bool)
    one[2] = True
    image.requires_grad_(True)
    zero = clip_loss(image, text, 4.0, pair_mask=one)
    assert zero.item() == 0.0 and zero.requires_grad


def test_clip_term_reads_outputs_and_names_missing_key() -> None:
    image, text = _pair()
    term = ClipLoss()
    out = {
        "image_embeds": image,
        "text_embeds": text,
        "logit_scale": torch.tensor(SCALE_INIT, dtype=torch.float64),
    }
    torch.testing.assert_close(term(out, {})["loss"], clip_reference(image, text, SCALE_INIT))
    del out["text_embeds"]
    with pytest.raises(
        MissingInputError, match=r"needs model output 'text_embeds'.*image_embeds, logit_scale"
    ):
        term(out, {})
    assert term.required_outputs() == ("image_embeds", "text_embeds", "logit_scale")


def test_clip_term_rejects_non_scalar_scale_and_mismatched_rows() -> None:
    image, text = _pair()
    with pytest.raises(ObjectiveInputError, match=r"logit_scale.*scalar"):
        ClipLoss()({"image_embeds": image, "text_embeds": text, "logit_scale": torch.ones(2)}, {})
    with pytest.raises(ObjectiveInputError, match=r"text_embeds.*4 rows, expected 5"):
        ClipLoss()({"image_embeds": image, "text_embeds": text[:4], "logit_scale": torch.tensor(1.0)}, {})


def test_siglip_matches_direct_formula_and_gradients() -> None:
    image, text = _pair()
    image.requires_grad_(True)
    scale = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-10.0, dtype=torch.float64, requires_grad=True)  # SigLIP paper init: t'=log 10, b=-10
    ours = siglip_loss(image, text, scale, bias)
    ref = siglip_reference(image, text, scale, bias)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(
        torch.autograd.grad(ours, (image, scale, bias)),
        torch.autograd.grad(ref, (image, scale, bias)),
        strict=True,
    ):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda i, s, b: siglip_loss(i, text, s, b), (image, scale, bias))


def test_siglip_zero_logits_give_n_ln2() -> None:
    image, text = _pair(6)
    # every pair contributes −log σ(0) = ln 2; N² pairs / N = N ln 2
    assert siglip_loss(image, text, 0.0, 0.0).item() == pytest.approx(6 * math.log(2), abs=1e-12)


def test_siglip_term_needs_bias() -> None:
    image, text = _pair()
    with pytest.raises(MissingInputError, match=r"'logit_bias'"):
        SigLipLoss()({"image_embeds": image, "text_embeds": text, "logit_scale": torch.tensor(1.0)}, {})


def test_triplet_provided_negatives_match_torch_and_formula() -> None:
    # The Balancing Act prostate setting: margin 2, p=2, eps=1e-6, normalised embeddings (notes A.5).
    a, p = _pair(4, 5)
    n = torch.randn(4, 5, dtype=torch.float64)
    a.requires_grad_(True)
    term = TripletLoss({"negatives": "provided", "margin": 2.0})
    out = {"image_embeds": a, "text_embeds": p, "negative_text_embeds": n}
    loss = term(out, {})["loss"]
    expected_torch = torch.nn.TripletMarginLoss(margin=2.0, p=2)(
        F.normalize(a, dim=-1), F.normalize(p, dim=-1), F.normalize(n, dim=-1)
    )
    torch.testing.assert_close(loss, expected_torch)
    ref = triplet_reference(F.normalize(a, dim=-1), F.normalize(p, dim=-1), F.normalize(n, dim=-1), 2.0)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(torch.autograd.grad(loss, a)[0], torch.autograd.grad(ref, a)[0])


def test_random_sampler_never_picks_self() -> None:
    a, p = _pair(5, 3)
    for _ in range(50):
        idx = select_negatives(a, p, "random")
        assert (idx != torch.arange(5)).all() and (idx >= 0).all()
    # every other record is reachable
    seen = {int(select_negatives(a, p, "random")[0]) for _ in range(200)}
    assert seen == {1, 2, 3, 4}


def test_different_label_sampler_obeys_rule_and_reports_missing() -> None:
    a, p = _pair(6, 3)
    labels = torch.tensor([0, 0, 1, 1, 2, 0])
    for _ in range(50):
        idx = select_negatives(a, p, "different_label", labels=labels)
        assert (labels[idx] != labels).all()
    same = torch.tensor([3, 3, 3, 3, 3, 1])
    idx = select_negatives(a, p, "different_label", labels=same)
    assert idx[:5].tolist() == [5] * 5 and int(idx[5]) in range(5)
    all_same = torch.zeros(6, dtype=torch.long)
    assert (select_negatives(a, p, "different_label", labels=all_same) == -1).all()


def test_different_label_multilabel_means_different_vector() -> None:
    y = torch.tensor([[1, 0], [1, 0], [1, 1]])
    assert labels_differ(y).tolist() == [[False, False, True], [False, False, True], [True, True, False]]


def test_hardest_sampler_picks_closest_other_text() -> None:
    a, p = _pair(6, 3)
    idx = select_negatives(a, p, "hardest")
    dist = torch.cdist(a, p)
    dist.fill_diagonal_(float("inf"))
    assert idx.tolist() == dist.argmin(dim=1).tolist()
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    idx = select_negatives(a, p, "hardest", labels=labels)
    dist[labels[:, None] == labels[None, :]] = float("inf")
    assert idx.tolist() == dist.argmin(dim=1).tolist()


def test_triplet_term_without_negative_raises_or_skips_with_a_counted_warning() -> None:
    a, p = _pair(4, 3)
    labels = torch.tensor([0, 0, 0, 1])  # record 3 is the only 1: everyone has a different-label negative
    term = TripletLoss({"negatives": "different_label", "task": "isup", "margin": 2.0})
    out = {"image_embeds": a, "text_embeds": p}
    res = term(out, {"labels": {"isup": labels}})
    assert res["n_without_negative"].item() == 0.0
    same = {"ids": ["a", "b", "c", "d"], "labels": {"isup": torch.zeros(4, dtype=torch.long)}}
    # the issue-14 failure: no negative in the step used to give a silent 0.0
    with pytest.raises(NoNegativeError, match=r"'triplet'.*4 of 4 rows have no negative.*'a', 'b'"):
        term(out, same)
    lenient = TripletLoss({"negatives": "different_label", "task": "isup", "on_missing_negative": "warn"})
    with pytest.warns(NoNegativeWarning, match=r"step 1 with missing negatives"):
        res = lenient(out, same)
    assert res["n_without_negative"].item() == 4.0 and res["loss"].item() == 0.0
    lenient(out, same)
    assert lenient.steps_without_negative == 2
    term.eval()  # validation loss: counted, never raised
    assert term(out, same)["n_without_negative"].item() == 4.0
    with pytest.raises(MissingInputError, match=r"batch\['labels.isup'\]"):
        term(out, {"labels": {}})


def test_clip_siglip_unicl_with_one_pair_raise_instead_of_a_silent_zero() -> None:
    a, p = _pair(1, 3)
    out = {"image_embeds": a, "text_embeds": p, "logit_scale": torch.tensor(10.0), "logit_bias": torch.tensor(0.0)}
    batch = {"ids": ["only"], "labels": {"y": torch.tensor([1])}}
    for term in (ClipLoss(), SigLipLoss(), UniCLLoss({"task": "y"})):
        with pytest.raises(NoNegativeError, match=r"1 of 1 rows have no negative"):
            term(out, batch)
    with pytest.warns(NoNegativeWarning):
        assert ClipLoss({"on_missing_negative": "warn"})(out, batch)["loss"].item() == 0.0


def test_triplet_dataset_negatives_equal_torch_per_anchor_negative_pair() -> None:
    # batch of one slide with K = 3 negatives drawn from the dataset (the Balancing Act at batch size 1)
    a, p = _pair(2, 5)
    negatives = torch.randn(2, 3, 5, dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    a.requires_grad_(True)
    term = TripletLoss({"negatives": "dataset", "margin": 2.0})
    res = term({"image_embeds": a, "text_embeds": p, "negative_text_embeds": negatives}, {"negative_mask": mask})
    an, pn, nn_ = F.normalize(a, dim=-1), F.normalize(p, dim=-1), F.normalize(negatives, dim=-1)
    rows, cols = mask.nonzero(as_tuple=True)
    expected = torch.nn.TripletMarginLoss(margin=2.0, p=2)(an[rows], pn[rows], nn_[rows, cols])
    torch.testing.assert_close(res["loss"], expected)
    assert res["n_without_negative"].item() == 0.0
    # one record at batch size 1 with K = 1 is exactly the reference's TripletMarginLoss
    one = term({"image_embeds": a[:1], "text_embeds": p[:1], "negative_text_embeds": negatives[:1, :1]},
               {"negative_mask": mask[:1, :1]})["loss"]
    torch.testing.assert_close(one, triplet_reference(an[:1], pn[:1], nn_[:1, 0], 2.0))
    with pytest.raises(NoNegativeError):
        term({"image_embeds": a, "text_embeds": p, "negative_text_embeds": negatives},
             {"negative_mask": torch.zeros(2, 3, dtype=torch.bool)})
    with pytest.raises(ObjectiveInputError, match=r"must be \(B, K, D\)"):
        term({"image_embeds": a, "text_embeds": p, "negative_text_embeds": negatives[0]}, {"negative_mask": mask})


def test_clip_dataset_negatives_are_extra_image_to_text_columns() -> None:
    a, p = _pair(1, 4)
    negatives = torch.randn(1, 2, 4, dtype=torch.float64)
    scale = torch.tensor(SCALE_INIT, dtype=torch.float64)
    term = ClipLoss({"dataset_negatives": True})
    res = term({"image_embeds": a, "text_embeds": p, "logit_scale": scale, "negative_text_embeds": negatives},
               {"negative_mask": torch.ones(1, 2, dtype=torch.bool)})
    an, cols = F.normalize(a, dim=-1), F.normalize(torch.cat([p, negatives[0]]), dim=-1)
    logits = scale * an @ cols.T
    # image→text: CE over [own text, 2 negatives]; text→image of a batch of one: log 1 = 0
    expected = 0.5 * F.cross_entropy(logits, torch.tensor([0]))
    torch.testing.assert_close(res["loss"], expected)
    assert res["loss"].item() > 0


def test_triplet_hardest_term_equals_formula_on_selected_negatives() -> None:
    a, p = _pair(5, 3)
    term = TripletLoss({"negatives": "hardest", "margin": 0.5})
    loss = term({"image_embeds": a, "text_embeds": p}, {})["loss"]
    an, pn = F.normalize(a, dim=-1), F.normalize(p, dim=-1)
    dist = torch.cdist(an, pn)
    dist.fill_diagonal_(float("inf"))
    torch.testing.assert_close(loss, triplet_reference(an, pn, pn[dist.argmin(1)], 0.5))


def test_triplet_options_validation_names_key() -> None:
    with pytest.raises(ValueError, match=r"task is required"):
        TripletLoss({"negatives": "different_label"})
    with pytest.raises(ValueError, match=r"options\.margin"):
        TripletLoss({"margin": -1.0})
    with pytest.raises(ValueError, match=r"options\.marign: unknown key"):
        TripletLoss({"marign": 1.0})
