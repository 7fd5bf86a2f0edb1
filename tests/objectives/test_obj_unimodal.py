"""SimCLR NT-Xent and masked-image contrastive terms."""

from __future__ import annotations

import torch
from objectives_reference import nt_xent_reference

from medvl.objectives import MaskedImageContrastiveLoss, SimCLRLoss, clip_loss, nt_xent_loss


def _views(b: int = 4, d: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(b, d, generator=g, dtype=torch.float64), torch.randn(
        b, d, generator=g, dtype=torch.float64
    )


def test_nt_xent_matches_simclr_formula_and_gradcheck() -> None:
    z1, z2 = _views()
    z1.requires_grad_(True)
    ours = nt_xent_loss(z1, z2, 1 / 0.5)
    ref = nt_xent_reference(z1, z2, 0.5)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, z1)[0], torch.autograd.grad(ref, z1)[0])
    assert torch.autograd.gradcheck(lambda a: nt_xent_loss(a, z2, 2.0), (z1,))


def test_simclr_term_temperature_and_learnable_scale() -> None:
    z1, z2 = _views()
    out = {"image_view1_embeds": z1, "image_view2_embeds": z2, "s": torch.tensor(10.0, dtype=torch.float64)}
    fixed = SimCLRLoss({"temperature": 0.1})(out, {})["loss"]
    torch.testing.assert_close(fixed, nt_xent_reference(z1, z2, 0.1))
    learnable = SimCLRLoss({"scale_key": "s"})(out, {})["loss"]
    torch.testing.assert_close(learnable, fixed)
    assert SimCLRLoss({"scale_key": "s"}).required_outputs() == (
        "image_view1_embeds",
        "image_view2_embeds",
        "s",
    )


def test_masked_image_cross_view_is_infonce_between_views() -> None:
    z1, z2 = _views(5)
    out = {"image_unimodal_embeds": z1, "image_masked_unimodal_embeds": z2}
    loss = MaskedImageContrastiveLoss({"negatives": "cross_view", "temperature": 0.2})(out, {})["loss"]
    torch.testing.assert_close(loss, clip_loss(z1, z2, 5.0))
    nt = MaskedImageContrastiveLoss({"temperature": 0.2})(out, {})["loss"]
    torch.testing.assert_close(nt, nt_xent_reference(z1, z2, 0.2))
