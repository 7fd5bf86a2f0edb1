"""Published families as training towers: an open_clip tower pair (FLIP patch dropout, partial
freezing) and a timm ResNet-50 backbone train end to end with ``medvl train`` and resume exactly
(bit-identical weights after a kill and ``--resume``), like the built-in towers."""

from __future__ import annotations

from pathlib import Path

import pytest
from _training_data import (
    TINY_OPEN_CLIP,
    published_run_config,
    run_config_dict,
    train_tokenizer_file,
    write_tiny_dataset,
)
from _training_tiny import train_kill_resume

from medvl.models import DualEncoder
from medvl.models.loading import load_trained_model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), n=18, size=32)


@pytest.mark.slow
def test_open_clip_towers_train_and_resume_exactly(dataset: Path, tmp_path: Path) -> None:
    model = {"embed_dim": 16,
             "vision": {"kind": "open_clip", "model_cfg": TINY_OPEN_CLIP, "patch_keep_ratio": 0.5,
                        "freeze": {"mode": "partial", "groups": 1}},
             "text": {"kind": "open_clip", "model_cfg": TINY_OPEN_CLIP},
             "vision_projection": {"kind": "identity"}, "text_projection": {"kind": "identity"},
             "classifiers": {"findings": {"kind": "multilabel", "num_classes": 3}}}
    run = train_kill_resume(published_run_config(dataset, model), tmp_path)
    trained = load_trained_model(run, "last")
    assert isinstance(trained, DualEncoder)
    frozen = trained.vision.layer_groups()[0]
    assert all(not p.requires_grad for p in frozen.parameters())
    assert trained.vision.visual.patch_dropout.prob == 0.5


@pytest.mark.slow
def test_timm_resnet50_tower_trains_and_resumes_exactly(dataset: Path, tmp_path: Path) -> None:
    tokenizer = train_tokenizer_file(dataset)
    text = run_config_dict(dataset, tokenizer)["model"]["text"]  # type: ignore[index]
    model = {"embed_dim": 8,
             "vision": {"kind": "timm", "model_name": "resnet50", "freeze": {"mode": "partial", "groups": 15}},
             "text": text, "classifiers": {"findings": {"kind": "multilabel", "num_classes": 3}}}
    run = train_kill_resume(published_run_config(dataset, model), tmp_path)
    trained = load_trained_model(run, "last")
    assert trained.vision.architecture == "resnet50" and trained.vision.feature_dim == 2048
    assert len(trained.vision.layer_groups()) == 17  # stem + 16 bottleneck blocks
