"""Supervised terms (BCE, masked BCE, CE, MSE) against direct formulas."""

from __future__ import annotations

import pytest
import torch
from objectives_reference import bce_elem, masked_bce_reference

from medvl.objectives import BCELoss, CrossEntropyLoss, MaskedBCELoss, MSELoss, ObjectiveInputError
from medvl.objectives.supervised import masked_bce_with_logits


def _logits(b: int = 4, c: int = 3) -> torch.Tensor:
    return torch.randn(b, c, dtype=torch.float64, requires_grad=True)


def test_bce_matches_balancing_act_formula() -> None:
    # Balancing Act Appendix D.1: L_BCE = −1/N Σ [y log σ + (1−y) log(1−σ)], mean over N×C entries (BCEWithLogitsLoss).
    logits = _logits()
    y = torch.randint(0, 2, (4, 3)).double()
    loss = BCELoss({"task": "coco"})({"logits.coco": logits}, {"labels": {"coco": y}})["loss"]
    ref = torch.stack([bce_elem(logits[i, k], float(y[i, k])) for i in range(4) for k in range(3)]).mean()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(torch.autograd.grad(loss, logits)[0], torch.autograd.grad(ref, logits)[0])


def test_bce_reads_nested_logits_and_checks_shapes() -> None:
    logits = _logits()
    y = torch.ones(4, 3)
    term = BCELoss({"task": "coco"})
    flat = term({"logits.coco": logits}, {"labels": {"coco": y}})["loss"]
    nested = term({"logits": {"coco": logits}}, {"labels": {"coco": y}})["loss"]
    torch.testing.assert_close(flat, nested)
    with pytest.raises(ObjectiveInputError, match=r"shape \(4, 3\) but labels.coco has shape \(4, 2\)"):
        term({"logits.coco": logits}, {"labels": {"coco": torch.ones(4, 2)}})


def test_masked_bce_matches_dlilp_reference_and_gradcheck() -> None:
    logits = _logits(5, 4)
    y = torch.randint(0, 2, (5, 4)).double()
    mask = torch.tensor(
        [[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0]], dtype=torch.bool
    )
    ours = masked_bce_with_logits(logits, y, mask)
    ref = masked_bce_reference(logits, y, mask, eps=1e-3)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(ref, logits)[0])
    assert torch.autograd.gradcheck(lambda x: masked_bce_with_logits(x, y, mask), (logits,))


def test_masked_bce_excludes_unannotated_classes() -> None:
    logits = _logits(3, 4)
    y = torch.randint(0, 2, (3, 4)).double()
    mask = torch.tensor([[1, 1, 0, 0]] * 3, dtype=torch.bool)
    y_nan = y.clone()
    y_nan[:, 2:] = float("nan")  # unannotated targets may be anything, even NaN
    loss = masked_bce_with_logits(logits, y_nan, mask)
    assert torch.isfinite(loss)
    grad = torch.autograd.grad(loss, logits)[0]
    assert (grad[:, 2:] == 0).all() and (grad[:, :2] != 0).all()
    # changing an unannotated logit does not change the loss
    shifted = logits.detach().clone()
    shifted[:, 3] += 100.0
    torch.testing.assert_close(masked_bce_with_logits(shifted, y_nan, mask), loss.detach())


def test_masked_bce_full_mask_is_bce_times_c_over_c_plus_eps() -> None:
    logits = _logits(4, 5)
    y = torch.randint(0, 2, (4, 5)).double()
    full = torch.ones(4, 5, dtype=torch.bool)
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    torch.testing.assert_close(masked_bce_with_logits(logits, y, full), plain * 5 / (5 + 1e-3))
    torch.testing.assert_close(masked_bce_with_logits(logits, y, full, eps=0.0), plain)


def test_masked_bce_term_uses_batch_mask_or_all_when_absent() -> None:
    logits = _logits(2, 3)
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    term = MaskedBCELoss({"task": "cxr"})
    with_mask = term({"logits.cxr": logits}, {"labels": {"cxr": y}, "label_mask": {"cxr": mask}})["loss"]
    torch.testing.assert_close(with_mask, masked_bce_reference(logits, y, mask))
    absent = term({"logits.cxr": logits}, {"labels": {"cxr": y}})["loss"]
    torch.testing.assert_close(absent, masked_bce_reference(logits, y, torch.ones(2, 3, dtype=torch.bool)))
    with pytest.raises(ObjectiveInputError, match=r"label_mask.cxr has shape"):
        term({"logits.cxr": logits}, {"labels": {"cxr": y}, "label_mask": {"cxr": mask[:, :2]}})


def test_cross_entropy_formula_ignore_index_and_range_check() -> None:
    logits = _logits(4, 3)
    y = torch.tensor([0, 2, -100, 1])
    loss = CrossEntropyLoss({"task": "t"})({"logits.t": logits}, {"labels": {"t": y}})["loss"]
    keep = [0, 1, 3]
    ref = -torch.stack([torch.log_softmax(logits[i], 0)[y[i]] for i in keep]).mean()
    torch.testing.assert_close(loss, ref)
    with pytest.raises(ObjectiveInputError, match=r"values \[3\] outside 0..2"):
        CrossEntropyLoss({"task": "t"})({"logits.t": logits}, {"labels": {"t": torch.tensor([0, 3, 1, 1])}})
    none = CrossEntropyLoss({"task": "t"})({"logits.t": logits}, {"labels": {"t": torch.full((4,), -100)}})[
        "loss"
    ]
    assert none.item() == 0.0 and none.requires_grad


def test_mse_matches_balancing_act_formula() -> None:
    # Balancing Act Appendix D.2: L_MSE = 1/N Σ (y_i − (W I_i + b))², ISUP grade regressed directly.
    pred = torch.randn(5, 1, dtype=torch.float64, requires_grad=True)
    grade = torch.tensor([0, 1, 5, 3, 2])
    loss = MSELoss({"task": "isup"})({"logits.isup": pred}, {"labels": {"isup": grade}})["loss"]
    ref = ((grade.double() - pred[:, 0]) ** 2).mean()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(torch.autograd.grad(loss, pred)[0], torch.autograd.grad(ref, pred)[0])
    with pytest.raises(ObjectiveInputError, match=r"one output per record"):
        MSELoss({"task": "isup"})({"logits.isup": torch.randn(5, 2)}, {"labels": {"isup": grade}})
