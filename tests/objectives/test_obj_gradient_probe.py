"""Gradient-balance probe: correct per-term norms on shared parameters, .grad untouched."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medvl.objectives import GradientProbe, build_objective


class _Tiny(nn.Module):
    """Backbone shared by a CLIP projection and a classifier head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(5, 4)
        self.proj = nn.Linear(4, 3)
        self.head = nn.Linear(4, 2)
        self.text = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.backbone(x))
        return {
            "image_embeds": self.proj(h),
            "text_embeds": self.text(t),
            "logit_scale": torch.tensor(10.0),
            "logits.y": self.head(h),
        }


def _setup() -> tuple[_Tiny, dict[str, torch.Tensor], dict[str, object]]:
    torch.manual_seed(0)
    model = _Tiny()
    out = model(torch.randn(6, 5), torch.randn(6, 6))
    batch = {"labels": {"y": torch.randint(0, 2, (6, 2)).float()}}
    return model, out, batch


def _norm(loss: torch.Tensor, params: list[nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    return math.sqrt(sum(float(g.double().square().sum()) for g in grads))


def test_probe_norms_on_shared_parameters_and_ratios() -> None:
    model, out, batch = _setup()
    obj = build_objective(
        {
            "balance": 0.9,
            "terms": [
                {"name": "clip", "kind": "clip"},
                {"name": "bce", "kind": "bce", "options": {"task": "y"}},
            ],
        }
    )
    losses = obj(out, batch)
    report = GradientProbe(every_n_steps=10).measure(losses, model, obj.weights)
    shared = list(model.backbone.parameters())  # the only parameters both terms reach
    assert report["n_params"] == sum(p.numel() for p in shared)
    assert report["clip"] == pytest.approx(_norm(losses["clip"], shared), rel=1e-9)
    assert report["bce"] == pytest.approx(_norm(losses["bce"], shared), rel=1e-9)
    assert report["ratio/clip/bce"] == pytest.approx(report["clip"] / report["bce"])
    assert report["ratio/bce/clip"] == pytest.approx(report["bce"] / report["clip"])
    ga = torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses["clip"], shared, retain_graph=True)])
    gb = torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses["bce"], shared, retain_graph=True)])
    assert report["cos/clip/bce"] == pytest.approx(
        float(torch.nn.functional.cosine_similarity(ga, gb, dim=0)), rel=1e-5
    )


def test_probe_scope_all_counts_unreached_parameters_as_zero() -> None:
    model, out, batch = _setup()
    obj = build_objective(
        {
            "terms": [
                {"name": "clip", "kind": "clip"},
                {"name": "bce", "kind": "bce", "options": {"task": "y"}},
            ]
        }
    )
    losses = obj(out, batch)
    report = GradientProbe(1, scope="all").measure(losses, model, obj.weights)
    assert report["n_params"] == sum(p.numel() for p in model.parameters())
    clip_params = [*model.backbone.parameters(), *model.proj.parameters(), *model.text.parameters()]
    assert report["clip"] == pytest.approx(_norm(losses["clip"], clip_params), rel=1e-9)


def test_probe_leaves_grad_untouched_and_training_backward_identical() -> None:
    model, out, batch = _setup()
    obj = build_objective(
        {
            "terms": [
                {"name": "clip", "kind": "clip"},
                {"name": "bce", "kind": "bce", "options": {"task": "y"}},
            ]
        }
    )
    losses = obj(out, batch)
    model.head.weight.grad = torch.full_like(model.head.weight, 7.0)  # a leftover value must stay as it is
    GradientProbe(1).measure(losses, model, obj.weights)
    assert all(p.grad is None for n, p in model.named_parameters() if n != "head.weight")
    assert torch.equal(model.head.weight.grad, torch.full_like(model.head.weight, 7.0))
    model.head.weight.grad = None
    losses["total"].backward()  # the graph is still there
    probed = {n: p.grad.clone() for n, p in model.named_parameters()}
    model2, out2, batch2 = _setup()
    obj(out2, batch2)["total"].backward()
    for n, p in model2.named_parameters():
        assert p.grad is not None
        torch.testing.assert_close(probed[n], p.grad)


def test_probe_schedule_and_errors() -> None:
    probe = GradientProbe(every_n_steps=5)
    assert [s for s in range(12) if probe.due(s)] == [0, 5, 10]
    assert not GradientProbe(0).due(0)
    model, out, batch = _setup()
    obj = build_objective(
        {
            "balance": 1.0,
            "terms": [
                {"name": "clip", "kind": "clip"},
                {"name": "bce", "kind": "bce", "options": {"task": "y"}},
            ],
        }
    )
    losses = obj(out, batch)
    with pytest.raises(ValueError, match="'bce' has no gradient graph"):
        GradientProbe(1, terms=["clip", "bce"]).measure(losses, model)
    assert set(GradientProbe(1).measure(losses, model, obj.weights)) == {"n_params", "clip"}
