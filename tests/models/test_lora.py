"""LoRA (peft) on a tiny Hugging Face ViT tower: only adapters train (counted), exact resume,
merged-weight export equal to the adapted model, and an adapter file peft itself loads."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import medvl  # noqa: F401  (first: it makes torchvision, which peft's transformers import pulls in, importable)

pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from _training_data import run_config_dict, train_tokenizer_file, write_tiny_dataset  # noqa: E402
from _training_tiny import KillAfter  # noqa: E402

from medvl.cli.main import build_app  # noqa: E402
from medvl.config.loading import ConfigError, config_from_dict  # noqa: E402
from medvl.config.model import ModelConfig  # noqa: E402
from medvl.config.training import RunConfig  # noqa: E402
from medvl.data.dataset import ImageTextDataset, collate, select_split  # noqa: E402
from medvl.data.manifest import read_manifest  # noqa: E402
from medvl.models import DualEncoder, build_model  # noqa: E402
from medvl.models.adapters import default_lora_targets  # noqa: E402
from medvl.models.loading.medvl import load_trained_model  # noqa: E402
from medvl.training import resolve_checkpoint  # noqa: E402
from medvl.training.run import run_training  # noqa: E402

HIDDEN, LAYERS, RANK = 16, 2, 4


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
                                    intermediate_size=32, image_size=16, patch_size=8, num_channels=1)
    out = tmp_path_factory.mktemp("tiny_vit")
    transformers.ViTModel(config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    manifest = write_tiny_dataset(tmp_path_factory.mktemp("data"))
    return manifest, train_tokenizer_file(manifest)


def _config(vit_dir: Path, data: tuple[Path, Path], **training: Any) -> dict[str, Any]:
    config = run_config_dict(*data, **training)
    config["model"]["vision"] = {"kind": "hf", "name_or_path": str(vit_dir), "lora": {"r": RANK, "alpha": 8}}
    config["evaluation"] = {"validation": {"tasks": []}}
    return config


def test_lora_trains_only_the_adapters(tmp_path: Path, vit_dir: Path, data: tuple[Path, Path]) -> None:
    cfg = config_from_dict(_config(vit_dir, data, epochs=1), RunConfig)
    model = build_model(cfg.model)
    adapted = model.vision.lora_modules  # found by default: the attention query/value projections
    targets = default_lora_targets(transformers.ViTModel.from_pretrained(vit_dir))
    assert targets in (["query", "value"], ["q_proj", "v_proj"])  # transformers 4 / 5 naming
    assert len(adapted) == 2 * LAYERS and {name.rsplit(".", 1)[-1] for name in adapted} == set(targets)
    trainable = {n: p.numel() for n, p in model.vision.named_parameters() if p.requires_grad}
    # 2 layers × (query, value) × r·(in + out): A is (r, 16), B is (16, r)
    assert all("lora_" in name for name in trainable)
    assert sum(trainable.values()) == LAYERS * 2 * RANK * (HIDDEN + HIDDEN) == 512
    base = {n: p.detach().clone() for n, p in model.vision.named_parameters() if "lora_" not in n}

    run_training(cfg, tmp_path / "run")
    trained = load_trained_model(tmp_path / "run", "last")
    for name, value in trained.vision.named_parameters():
        if "lora_" in name:
            continue
        assert torch.equal(value.detach(), base[name]), f"{name} (a base weight) changed"
    lora_b = [p for n, p in trained.vision.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: the adapters trained
    # the optimizer held the adapters and the heads / text tower, never the base ViT weights
    result = __import__("json").loads((tmp_path / "run" / "training_result.json").read_text())
    assert result["frozen_params"] >= len(base)


def test_lora_run_resumes_exactly_and_exports_merged_weights(tmp_path: Path, vit_dir: Path,
                                                             data: tuple[Path, Path]) -> None:
    cfg = config_from_dict(_config(vit_dir, data, epochs=1, checkpoint={"every_n_steps": 2},
                                   validate_at_start=False), RunConfig)
    run_training(cfg, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "killed", callbacks=[KillAfter(3)])
    run_training(cfg, tmp_path / "killed", resume=True)
    full = load_file(str(resolve_checkpoint(tmp_path / "full", "last") / "model.safetensors"))
    again = load_file(str(resolve_checkpoint(tmp_path / "killed", "last") / "model.safetensors"))
    assert any("lora_A" in k for k in full) and full.keys() == again.keys()
    for name, value in full.items():
        assert torch.equal(again[name], value), name

    out = tmp_path / "export"
    result = CliRunner().invoke(build_app(), ["models", "export", str(tmp_path / "full"), "--out", str(out),
                                              "--which", "last", "--merge-lora", "--adapters"])
    assert result.exit_code == 0, result.output
    merged = DualEncoder.from_pretrained(out)
    assert merged.config.vision.lora is None
    assert not [k for k in load_file(str(out / "model.safetensors")) if "lora" in k]
    adapted = load_trained_model(tmp_path / "full", "last").eval()
    manifest = read_manifest(cfg.data.manifest)
    batch = collate([ImageTextDataset.from_config(select_split(manifest, cfg.data, "test"), cfg.data, train=False,
                                                  seed=0)[i] for i in range(3)])
    with torch.no_grad():
        torch.testing.assert_close(merged.eval().encode_image(batch), adapted.encode_image(batch),
                                   rtol=1e-5, atol=1e-6)
        # the adapter file in peft's own layout: peft loads it onto the base ViT and gives the same features
        import peft

        base = transformers.ViTModel.from_pretrained(vit_dir)
        with_adapter = peft.PeftModel.from_pretrained(base, out / "adapters" / "vision").eval()
        pixels = batch["pixel_values"]
        torch.testing.assert_close(with_adapter(pixel_values=pixels).last_hidden_state,
                                   adapted.vision.core(pixel_values=pixels).last_hidden_state, rtol=1e-5, atol=1e-6)


def test_lora_config_errors_name_the_key(tmp_path: Path, vit_dir: Path) -> None:
    vision = {"kind": "hf", "name_or_path": str(vit_dir)}
    with pytest.raises(ValueError, match=r"freeze\.mode='full' cannot be combined"):
        ModelConfig.model_validate({"vision": {**vision, "lora": {}, "freeze": {"mode": "full"}}, "text": None})
    with pytest.raises(ConfigError, match=r"model.vision.lora.target_modules=\['nope'\]"):
        build_model(ModelConfig.model_validate({"vision": {**vision, "lora": {"target_modules": ["nope"]}},
                                                "text": None}))
    cnn = ModelConfig.model_validate({"vision": {"kind": "tiny_cnn", "in_channels": 1, "lora": {}}, "text": None})
    with pytest.raises(ConfigError, match="no attention projections to adapt by default"):
        build_model(cnn)
