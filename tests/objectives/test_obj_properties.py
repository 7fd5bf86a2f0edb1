"""Properties that catch indexing bugs: batch-permutation invariance and scale invariance."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medvl.objectives import clip_loss, nt_xent_loss, siglip_loss, unicl_loss
from medvl.objectives.supervised import masked_bce_with_logits

SETTINGS = settings(max_examples=15, deadline=None)


def _tensors(seed: int, b: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=torch.float64), torch.randn(
        b, d, generator=g, dtype=torch.float64
    )


@SETTINGS
@given(seed=st.integers(0, 10_000), b=st.integers(2, 7), d=st.integers(1, 5), scale=st.floats(0.0, 50.0))
def test_pairwise_losses_are_invariant_to_batch_order(seed: int, b: int, d: int, scale: float) -> None:
    image, text = _tensors(seed, b, d)
    labels = torch.randint(0, 3, (b,), generator=torch.Generator().manual_seed(seed))
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(seed + 1))
    torch.testing.assert_close(clip_loss(image[perm], text[perm], scale), clip_loss(image, text, scale))
    torch.testing.assert_close(
        siglip_loss(image[perm], text[perm], scale, -1.0), siglip_loss(image, text, scale, -1.0)
    )
    torch.testing.assert_close(
        unicl_loss(image[perm], text[perm], scale, labels[perm], labels[perm]),
        unicl_loss(image, text, scale, labels, labels),
    )
    torch.testing.assert_close(nt_xent_loss(image[perm], text[perm], scale), nt_xent_loss(image, text, scale))


@SETTINGS
@given(seed=st.integers(0, 10_000), b=st.integers(2, 6), factor=st.floats(1e-2, 1e2))
def test_normalised_losses_ignore_embedding_norms(seed: int, b: int, factor: float) -> None:
    image, text = _tensors(seed, b, 4)
    torch.testing.assert_close(clip_loss(image * factor, text, 7.0), clip_loss(image, text, 7.0))
    torch.testing.assert_close(
        siglip_loss(image, text * factor, 7.0, 0.5), siglip_loss(image, text, 7.0, 0.5)
    )


@SETTINGS
@given(seed=st.integers(0, 10_000), b=st.integers(1, 6), c=st.integers(1, 6))
def test_masked_bce_is_bounded_by_the_annotated_entries(seed: int, b: int, c: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 2, (b, c), generator=g).double()
    mask = torch.rand(b, c, generator=g) > 0.4
    loss = masked_bce_with_logits(logits, y, mask)
    elementwise = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    assert loss >= 0
    if mask.any():
        assert loss <= elementwise[mask].max() + 1e-12
    else:
        assert loss == 0
