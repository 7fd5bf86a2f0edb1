"""Published families as training towers: an open_clip tower pair (FLIP patch dropout, partial
freezing) and a timm ResNet-50 backbone train end to end with ``medvl train`` and resume exactly
(bit-identical weights after a kill and ``--resume``), like the built-in towers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from _training_data import run_config_dict, train_tokenizer_file, write_tiny_dataset
from _training_tiny import KillAfter, assert_same_last_checkpoint
from safetensors.torch import load_file
from typer.testing import CliRunner

from medvl.cli.main import build_app
from medvl.config.loading import config_from_dict
from medvl.config.training import RunConfig
from medvl.models import DualEncoder
from medvl.models.loading import load_trained_model
from medvl.training.run import run_training

TINY_OPEN_CLIP = {"embed_dim": 16,
                  "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
                  "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), n=18, size=32)


def _config(manifest: Path, model: dict[str, Any]) -> dict[str, Any]:
    data = run_config_dict(manifest, epochs=1, checkpoint={"every_n_steps": 2}, validate_at_start=False)
    data["data"] = {**data["data"], "image_size": 32, "channels": 3}  # type: ignore[dict-item]
    data["model"] = model
    data["evaluation"] = {"validation": {"tasks": []}}
    return data


def _train_kill_resume(data: dict[str, Any], tmp: Path) -> Path:
    cfg = config_from_dict(data, RunConfig)
    (tmp / "run.yaml").write_text(yaml.safe_dump(data))
    runner = CliRunner()
    full = runner.invoke(build_app(), ["train", str(tmp / "run.yaml"), "--out", str(tmp / "full")])
    assert full.exit_code == 0, full.output
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp / "killed", callbacks=[KillAfter(3)])
    resumed = runner.invoke(build_app(), ["train", str(tmp / "run.yaml"), "--out", str(tmp / "killed"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    a = assert_same_last_checkpoint(tmp / "full", tmp / "killed")
    first = load_file(str(tmp / "full" / "model" / "model.safetensors"))
    assert any(not torch.equal(first[k], a[k]) for k in a if k.startswith("vision."))  # the tower trained
    return tmp / "full"


@pytest.mark.slow
def test_open_clip_towers_train_and_resume_exactly(dataset: Path, tmp_path: Path) -> None:
    model = {"embed_dim": 16,
             "vision": {"kind": "open_clip", "model_cfg": TINY_OPEN_CLIP, "patch_keep_ratio": 0.5,
                        "freeze": {"mode": "partial", "groups": 1}},
             "text": {"kind": "open_clip", "model_cfg": TINY_OPEN_CLIP},
             "vision_projection": {"kind": "identity"}, "text_projection": {"kind": "identity"},
             "classifiers": {"findings": {"kind": "multilabel", "num_classes": 3}}}
    run = _train_kill_resume(_config(dataset, model), tmp_path)
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
    run = _train_kill_resume(_config(dataset, model), tmp_path)
    trained = load_trained_model(run, "last")
    assert trained.vision.architecture == "resnet50" and trained.vision.feature_dim == 2048
    assert len(trained.vision.layer_groups()) == 17  # stem + 16 bottleneck blocks
