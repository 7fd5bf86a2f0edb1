"""Composite objective, λ-balance sugar, config validation and the registry."""

from __future__ import annotations

import pytest
import torch

from medvl.config import ConfigError, config_from_dict
from medvl.config.objective import OPTION_SCHEMAS, ObjectiveConfig
from medvl.objectives import OBJECTIVES, BCELoss, ClipLoss, CompositeObjective, build_objective


def _outputs_batch() -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    g = torch.Generator().manual_seed(1)
    out = {
        "image_embeds": torch.randn(4, 6, generator=g, requires_grad=True),
        "text_embeds": torch.randn(4, 6, generator=g),
        "logit_scale": torch.tensor(1 / 0.07),
        "logits.coco": torch.randn(4, 3, generator=g, requires_grad=True),
    }
    return out, {"labels": {"coco": torch.randint(0, 2, (4, 3), generator=g).float()}}


def _balanced(lam: float) -> CompositeObjective:
    return build_objective(
        {
            "balance": lam,
            "terms": [
                {"name": "clip", "kind": "clip"},
                {"name": "bce", "kind": "bce", "options": {"task": "coco"}},
            ],
        }
    )


def test_balance_is_lambda_contrastive_plus_one_minus_lambda_task() -> None:
    out, batch = _outputs_batch()
    clip = ClipLoss()(out, batch)["loss"]
    bce = BCELoss({"task": "coco"})(out, batch)["loss"]
    res = _balanced(0.3)(out, batch)
    torch.testing.assert_close(res["total"], 0.3 * clip + 0.7 * bce)
    torch.testing.assert_close(res["clip"], clip)
    torch.testing.assert_close(res["bce"], bce)


@pytest.mark.parametrize(("lam", "single"), [(1.0, "clip"), (0.0, "bce")])
def test_lambda_extremes_reduce_to_single_term(lam: float, single: str) -> None:
    out, batch = _outputs_batch()
    res = _balanced(lam)(out, batch)
    assert torch.equal(res["total"], res[single])
    other = "bce" if single == "clip" else "clip"
    assert not res[other].requires_grad  # logged, computed without gradient
    grads = torch.autograd.grad(res["total"], (out["image_embeds"], out["logits.coco"]), allow_unused=True)
    if single == "clip":
        assert grads[1] is None
    else:
        assert grads[0] is None


def test_zero_weight_term_nan_does_not_poison_total() -> None:
    out, batch = _outputs_batch()
    out["logits.coco"] = torch.full((4, 3), float("nan"))
    res = _balanced(1.0)(out, batch)
    assert torch.isnan(res["bce"]) and torch.isfinite(res["total"])


def test_zero_weight_terms_can_be_skipped() -> None:
    out, batch = _outputs_batch()
    obj = build_objective(
        {
            "balance": 1.0,
            "log_zero_weight_terms": False,
            "terms": [
                {"name": "clip", "kind": "clip"},
                {"name": "bce", "kind": "bce", "options": {"task": "coco"}},
            ],
        }
    )
    del out["logits.coco"]
    assert set(obj(out, batch)) == {"clip", "total"}


def test_plain_weights_and_sub_terms_are_named() -> None:
    out, batch = _outputs_batch()
    out.update(
        {
            "image_embeds_2": torch.randn(4, 6),
            "logit_scale_2": torch.tensor(10.0),
            "prototypes.coco": torch.randn(3, 6),
        }
    )
    obj = build_objective(
        {
            "terms": [
                {"name": "dl", "kind": "dlilp", "weight": 2.0, "options": {"task": "coco"}},
                {"name": "c2", "kind": "clip", "weight": 0.5},
            ]
        }
    )
    res = obj(out, batch)
    assert set(res) == {"dl", "dl.bce", "dl.clip", "c2", "total"}
    torch.testing.assert_close(res["total"], 2.0 * res["dl"] + 0.5 * res["c2"])
    assert obj.required_outputs() == (
        "image_embeds",
        "text_embeds",
        "logit_scale",
        "image_embeds_2",
        "logit_scale_2",
        "prototypes.coco",
    )
    assert obj.required_batch() == ("labels.coco",)


def test_resolved_weights_with_balance_and_explicit_weights() -> None:
    cfg = ObjectiveConfig.model_validate(
        {
            "balance": 0.9,
            "terms": [
                {"name": "clip", "kind": "clip", "weight": 2.0},
                {"name": "simclr", "kind": "simclr", "role": "task"},
            ],
        }
    )
    weights = cfg.resolved_weights()
    assert weights["clip"] == pytest.approx(1.8) and weights["simclr"] == pytest.approx(0.1)


def test_config_errors_name_keys() -> None:
    def err(data: dict) -> str:
        with pytest.raises(ConfigError) as info:
            config_from_dict(data, ObjectiveConfig, source="run.yaml")
        return str(info.value)

    assert "terms.0.options: margn: unknown key" in err(
        {"terms": [{"name": "t", "kind": "triplet", "options": {"margn": 2}}]}
    )
    assert "unknown objective kind 'clipp'" in err({"terms": [{"name": "t", "kind": "clipp"}]})
    assert "terms.0.options: task: required key is missing" in err({"terms": [{"name": "b", "kind": "bce"}]})
    assert "duplicate term names ['a']" in err(
        {"terms": [{"name": "a", "kind": "clip"}, {"name": "a", "kind": "clip"}]}
    )
    assert "balance" in err({"balance": 1.5, "terms": [{"name": "a", "kind": "clip"}]})
    assert "no term has role ['task']" in err({"balance": 0.5, "terms": [{"name": "a", "kind": "clip"}]})
    assert "terms.1.role" in err(
        {"balance": 0.5, "terms": [{"name": "a", "kind": "clip"}, {"name": "s", "kind": "simclr"}]}
    )
    assert "reserved" in err({"terms": [{"name": "total", "kind": "clip"}]})
    assert "terms.0.weight" in err({"terms": [{"name": "a", "kind": "clip", "weight": -1}]})
    assert "gradient_probe.terms" in err(
        {"terms": [{"name": "a", "kind": "clip"}], "gradient_probe": {"terms": ["b"]}}
    )
    assert "terms.0.bogus: unknown key" in err({"terms": [{"name": "a", "kind": "clip", "bogus": 1}]})


def test_all_weights_zero_is_rejected() -> None:
    with pytest.raises(ValueError, match="weight 0"):
        CompositeObjective([(ClipLoss(), 0.0)])


def test_registry_covers_every_option_schema_and_terms_have_no_parameters() -> None:
    assert set(OBJECTIVES) == set(OPTION_SCHEMAS)
    required = {
        "bce": {"task": "t"},
        "masked_bce": {"task": "t"},
        "ce": {"task": "t"},
        "mse": {"task": "t"},
        "unicl": {"task": "t"},
        "prototype_bce": {"task": "t"},
        "dlilp": {"task": "t"},
    }
    for kind, cls in OBJECTIVES.items():
        term = cls(required.get(kind, {}))
        assert term.kind == kind
        assert list(term.parameters()) == []  # everything trainable lives in the model


def test_describe_nonfinite_names_terms_outputs_and_records() -> None:
    out, batch = _outputs_batch()
    batch["ids"] = ["r0", "r1", "r2", "r3"]
    image = out["image_embeds"].detach().clone()
    image[2, 1] = float("nan")
    out["image_embeds"] = image
    obj = _balanced(0.5)
    losses = obj(out, batch)
    assert not torch.isfinite(losses["total"])
    message = obj.describe_nonfinite(out, batch, losses)
    assert "non-finite terms: clip, total" in message
    assert "model output 'image_embeds' is non-finite for records ['r2']" in message
    out["logit_scale"] = torch.tensor(float("inf"))
    assert "'logit_scale' holds non-finite values" in obj.describe_nonfinite(out, batch)


def test_resolved_config_round_trips_with_every_option_default(tmp_path) -> None:
    from medvl.config import load_config, save_resolved_config

    cfg = ObjectiveConfig.model_validate(
        {"terms": [{"name": "t", "kind": "triplet", "options": {"margin": 2.0}}]}
    )
    assert cfg.terms[0].options["negatives"] == "random" and cfg.terms[0].options["margin"] == 2.0
    path = save_resolved_config(cfg, tmp_path, "objective.yaml")
    assert load_config(path, ObjectiveConfig) == cfg
