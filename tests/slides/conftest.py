"""Small generated pyramidal slides shared by the slide tests (session scoped, read-only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medvl.slides.synthetic import SyntheticSlideConfig, render_slide, write_pyramidal_tiff

SMALL = SyntheticSlideConfig(width=768, height=512, mpp=0.5, levels=3, tile=128)


@pytest.fixture(scope="session")
def small_slides(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """Three slides (grades 0, 3, 5) of 768×512 px at 0.5 µm/px and their true tissue masks."""
    root = tmp_path_factory.mktemp("slides")
    truths = {}
    for i, grade in enumerate((0, 3, 5)):
        image, tissue = render_slide(grade, seed=11 + i, config=SMALL)
        write_pyramidal_tiff(root / f"case{i}.tif", image, SMALL.mpp, SMALL.levels, SMALL.tile)
        truths[f"case{i}"] = tissue
    return root, truths


@pytest.fixture(scope="session")
def patch_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CNN saved as a medvl model directory (image tower only)."""
    import torch

    from medvl.config.model import ModelConfig
    from medvl.models import build_model

    torch.manual_seed(0)
    cfg = ModelConfig.model_validate({"embed_dim": 8, "text": None, "vision_projection": {"kind": "identity"},
                                      "vision": {"kind": "tiny_cnn", "in_channels": 3, "widths": [4, 8]}})
    out = tmp_path_factory.mktemp("patch_encoder")
    build_model(cfg).save_pretrained(out)
    return out
