"""The objectives on a real tiny DualEncoder: output keys line up, gradients reach the right parameters."""

from __future__ import annotations

import pytest
import torch

from medvl.config.loading import config_from_dict
from medvl.config.model import ModelConfig
from medvl.models import build_model
from medvl.objectives import GradientProbe, build_objective

CORPUS = [
    "small left pleural effusion",
    "no acute process",
    "mild pulmonary edema",
    "right lower lobe consolidation",
]


def _model(**extra: object) -> torch.nn.Module:
    data: dict[str, object] = {
        "embed_dim": 8,
        "vision": {"kind": "tiny_vit", "image_size": 8, "patch_size": 4, "width": 16, "depth": 1, "heads": 2},
        "text": {"kind": "tiny_text", "vocab_size": 64, "width": 16, "depth": 1, "heads": 2, "max_length": 8},
        "classifiers": {"finding": {"kind": "multilabel", "num_classes": 3}, "isup": {"kind": "ordinal"}},
    }
    data.update(extra)
    model = build_model(config_from_dict(data, ModelConfig))
    model.train_tokenizer(CORPUS * 3)
    return model


def _batch() -> dict[str, object]:
    return {
        "ids": ["a", "b", "c", "d"],
        "index": torch.arange(4),
        "pixel_values": torch.randn(4, 3, 8, 8),
        "texts": CORPUS,
        "labels": {
            "finding": torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]]),
            "isup": torch.tensor([0, 2, 5, 1]),
        },
        "label_mask": {"finding": torch.tensor([[True, True, False]] * 2 + [[True, True, True]] * 2)},
    }


def test_balanced_clip_and_task_terms_train_the_model_and_its_temperature() -> None:
    model = _model()
    obj = build_objective(
        {
            "balance": 0.9,
            "terms": [
                {"name": "clip", "kind": "clip"},
                {"name": "bce", "kind": "masked_bce", "options": {"task": "finding"}},
                {"name": "mse", "kind": "mse", "options": {"task": "isup"}},
            ],
        }
    )
    batch = _batch()
    losses = obj(model(batch), batch)
    assert {"clip", "bce", "mse", "total"} <= set(losses)
    torch.testing.assert_close(losses["total"], 0.9 * losses["clip"] + 0.1 * (losses["bce"] + losses["mse"]))
    probe = GradientProbe(1).measure(losses, model, obj.weights)
    assert probe["n_params"] > 0 and probe["clip"] > 0 and probe["bce"] > 0
    assert all(p.grad is None for p in model.parameters())
    losses["total"].backward()
    # the learnable temperature lives in the model and receives a gradient (unlike the reference repo, A.4)
    assert model.logit_scale.log_scale.grad is not None and model.logit_scale.log_scale.grad.abs() > 0


def test_dlilp_on_the_models_second_projection_and_prototypes() -> None:
    model = _model(
        vision_projection_2={"kind": "linear"},
        prototype={"task": "finding", "num_classes": 3, "input": "image_embeds_2"},
    )
    obj = build_objective({"terms": [{"name": "dlilp", "kind": "dlilp", "options": {"task": "finding"}}]})
    batch = _batch()
    out = model(batch)
    missing = [k for k in obj.required_outputs() if k not in out]
    if missing:
        pytest.skip(f"this DualEncoder does not output {missing} yet")
    losses = obj(out, batch)
    torch.testing.assert_close(losses["dlilp"], losses["dlilp.bce"] + 0.1 * losses["dlilp.clip"])
    losses["total"].backward()
    assert model.vision_projection_2 is not None
    assert any(p.grad is not None for p in model.vision_projection_2.parameters())
