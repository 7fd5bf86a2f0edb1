"""UniCL, prototype BCE and DLILP against direct formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from objectives_reference import masked_bce_reference, unicl_reference

from medvl.objectives import DLILPLoss, PrototypeBCELoss, UniCLLoss, clip_loss
from medvl.objectives.label_aware import share_label, unicl_loss


def _pair(b: int = 5, d: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(b, d, dtype=torch.float64), torch.randn(b, d, dtype=torch.float64)


def test_unicl_reduces_to_clip_when_labels_are_distinct() -> None:
    image, text = _pair()
    labels = torch.arange(5)
    torch.testing.assert_close(unicl_loss(image, text, 7.0, labels, labels), clip_loss(image, text, 7.0))
    multihot = torch.eye(5)
    torch.testing.assert_close(unicl_loss(image, text, 7.0, multihot, multihot), clip_loss(image, text, 7.0))


def test_unicl_matches_direct_formula_with_shared_labels_and_gradients() -> None:
    image, text = _pair(6)
    image.requires_grad_(True)
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0], [0, 1, 0], [0, 0, 1]])
    positives = share_label(labels, labels)
    positives.fill_diagonal_(True)
    assert positives[0, 1] and positives[1, 4] and not positives[0, 2] and positives[3].sum() == 1
    scale = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    ours = unicl_loss(image, text, scale, labels, labels)
    ref = unicl_reference(image, text, scale, positives)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(
        torch.autograd.grad(ours, (image, scale)), torch.autograd.grad(ref, (image, scale)), strict=True
    ):
        torch.testing.assert_close(a, b)


def test_unicl_multiclass_unlabelled_records_are_not_positives() -> None:
    labels = torch.tensor([2, 2, -1, -1])
    assert share_label(labels, labels).tolist() == [
        [True, True, False, False],
        [True, True, False, False],
        [False, False, False, False],
        [False, False, False, False],
    ]


def test_unicl_term_with_text_labels() -> None:
    image, text = _pair(4)
    img_labels = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])
    txt_labels = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 0]])
    term = UniCLLoss({"task": "cxr", "use_text_labels": True})
    out = {"image_embeds": image, "text_embeds": text, "logit_scale": torch.tensor(3.0, dtype=torch.float64)}
    loss = term(out, {"labels": {"cxr": img_labels}, "text_labels": {"cxr": txt_labels}})["loss"]
    positives = share_label(img_labels, txt_labels)
    positives.fill_diagonal_(True)
    torch.testing.assert_close(loss, unicl_reference(image, text, 3.0, positives))


def test_prototype_bce_matches_formula_and_mask() -> None:
    emb = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    protos = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (4, 3)).double()
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 1], [1, 1, 0]], dtype=torch.bool)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    out = {"image_embeds": emb, "prototypes.cxr": protos, "logit_scale_2": scale}
    loss = PrototypeBCELoss({"task": "cxr"})(out, {"labels": {"cxr": y}, "label_mask": {"cxr": mask}})["loss"]
    # DLILP B.4: z = s · norm(img) @ norm(P).T, then the masked BCE with +1e-3
    z = scale * F.normalize(emb, dim=-1) @ F.normalize(protos, dim=-1).T
    ref = masked_bce_reference(z, y, mask)
    torch.testing.assert_close(loss, ref)
    g1 = torch.autograd.grad(loss, (emb, protos))
    g2 = torch.autograd.grad(ref, (emb, protos))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)
    # the model's precomputed prototype logits give the same loss
    from_logits = PrototypeBCELoss({"task": "cxr", "logits_key": "prototype_logits.cxr"})
    assert from_logits.required_outputs() == ("prototype_logits.cxr",)
    batch = {"labels": {"cxr": y}, "label_mask": {"cxr": mask}}
    torch.testing.assert_close(from_logits({"prototype_logits": {"cxr": z}}, batch)["loss"], ref)
    # prototypes of classes unannotated for every record get no gradient
    mask_none_c2 = mask.clone()
    mask_none_c2[:, 2] = False
    loss2 = PrototypeBCELoss({"task": "cxr"})(
        out, {"labels": {"cxr": y}, "label_mask": {"cxr": mask_none_c2}}
    )["loss"]
    assert (torch.autograd.grad(loss2, protos)[0][2] == 0).all()


def _dlilp_outputs(b: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "image_embeds": torch.randn(b, 4, generator=g, dtype=torch.float64, requires_grad=True),
        "text_embeds": torch.randn(b, 4, generator=g, dtype=torch.float64),
        "logit_scale": torch.tensor(10.0, dtype=torch.float64),
        "image_embeds_2": torch.randn(b, 4, generator=g, dtype=torch.float64, requires_grad=True),
        "logit_scale_2": torch.tensor(14.0, dtype=torch.float64),
        "prototypes.cxr": torch.randn(3, 4, generator=g, dtype=torch.float64),
    }


def test_dlilp_is_prototype_bce_plus_lambda_clip_through_separate_projections() -> None:
    out = _dlilp_outputs()
    y = torch.randint(0, 2, (5, 3)).double()
    batch = {"labels": {"cxr": y}}
    res = DLILPLoss({"task": "cxr", "clip_weight": 0.1})(out, batch)
    bce = PrototypeBCELoss({"task": "cxr", "embeds_key": "image_embeds_2", "scale_key": "logit_scale_2"})(
        out, batch
    )["loss"]
    clip = clip_loss(out["image_embeds"], out["text_embeds"], out["logit_scale"])
    torch.testing.assert_close(res["bce"], bce)
    torch.testing.assert_close(res["clip"], clip)
    torch.testing.assert_close(res["loss"], bce + 0.1 * clip)
    # the label branch's gradient reaches only the second projection; CLIP's only the first
    g_bce = torch.autograd.grad(res["bce"], (out["image_embeds"], out["image_embeds_2"]), allow_unused=True)
    assert g_bce[0] is None and g_bce[1] is not None


def test_dlilp_clip_mask_keeps_only_report_pairs() -> None:
    out = _dlilp_outputs(6)
    y = torch.randint(0, 2, (6, 3)).double()
    is_report = torch.tensor([True, True, False, True, False, False])
    term = DLILPLoss({"task": "cxr", "clip_mask_key": "is_report"})
    res = term(out, {"labels": {"cxr": y}, "is_report": is_report})
    expected = clip_loss(out["image_embeds"][is_report], out["text_embeds"][is_report], out["logit_scale"])
    torch.testing.assert_close(res["clip"], expected)
    only_one = torch.tensor([True, False, False, False, False, False])
    assert term(out, {"labels": {"cxr": y}, "is_report": only_one})["clip"].item() == 0.0
    with pytest.raises(ValueError, match=r"batch\['is_report'\]"):
        term(out, {"labels": {"cxr": y}})
