"""Every registered term on every available device and under bf16 autocast gives the float64 CPU value."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from medvl.objectives import OBJECTIVES, build_term

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
OPTIONS: dict[str, dict[str, Any]] = {
    "bce": {"task": "m"},
    "masked_bce": {"task": "m"},
    "ce": {"task": "c"},
    "mse": {"task": "o"},
    "unicl": {"task": "c"},
    "prototype_bce": {"task": "m"},
    "dlilp": {"task": "m", "clip_mask_key": "is_report"},
    "triplet": {"negatives": "hardest", "hardest_different_label": True, "task": "c", "margin": 2.0},
}


def _inputs(device: str, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    g = torch.Generator().manual_seed(4)
    b, d, c = 6, 5, 3

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    out = {
        "image_embeds": r(b, d),
        "text_embeds": r(b, d),
        "image_embeds_2": r(b, d),
        "prototypes.m": r(c, d),
        "logit_scale": torch.tensor(10.0, device=device, dtype=dtype),
        "logit_scale_2": torch.tensor(5.0, device=device, dtype=dtype),
        "logit_bias": torch.tensor(-3.0, device=device, dtype=dtype),
        "logits.m": r(b, c),
        "logits.c": r(b, c),
        "logits.o": r(b, 1),
        "image_view1_embeds": r(b, d),
        "image_view2_embeds": r(b, d),
        "image_unimodal_embeds": r(b, d),
        "image_masked_unimodal_embeds": r(b, d),
        "caption_logits": r(b, 4, 7),
        "caption_labels": torch.tensor([[1, 2, 3, -100]] * 3 + [[4, 5, -100, -100]] * 3, device=device),
    }
    labels = {
        "m": torch.tensor(
            [[1.0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 1], [1, 0, 1]], device=device
        ),
        "c": torch.tensor([0, 1, 2, 0, 1, 2], device=device),
        "o": torch.tensor([0, 1, 5, 3, 2, 4], device=device),
    }
    mask = {"m": torch.tensor([[True, True, False]] * 3 + [[True, True, True]] * 3, device=device)}
    is_report = torch.tensor([True, True, False, True, True, False], device=device)
    return out, {"labels": labels, "label_mask": mask, "is_report": is_report, "ids": list("abcdef")}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", sorted(OBJECTIVES))
def test_term_on_device_matches_float64_cpu(kind: str, device: str) -> None:
    term = build_term(kind, OPTIONS.get(kind, {}))
    reference = term(*_inputs("cpu", torch.float64))["loss"]
    value = term(*_inputs(device, torch.float32))["loss"]
    assert value.device.type == device
    torch.testing.assert_close(value.double().cpu(), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", sorted(OBJECTIVES))
def test_term_under_bf16_autocast_is_finite_and_close(kind: str) -> None:
    term = build_term(kind, OPTIONS.get(kind, {}))
    reference = term(*_inputs("cpu", torch.float64))["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = term(*_inputs("cpu", torch.float32))["loss"]
    assert torch.isfinite(value)
    torch.testing.assert_close(value.double(), reference, rtol=5e-2, atol=5e-2)
