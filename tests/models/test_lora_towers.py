"""LoRA (peft) on timm and open_clip towers through the real training path: a tiny timm ViT (fused
``qkv``), an open_clip ViT CLIP (``nn.MultiheadAttention`` in both towers) and BiomedCLIP's layout
(open_clip with a timm ViT trunk and a Hugging Face BERT text tower). For each: exactly the adapter
parameters train (counted from r and the adapted layers' shapes), the towers' own weights stay
bit-identical, a killed and resumed run equals the uninterrupted one bit for bit, the merged export
equals the adapted model and loads without peft, and the exported adapter loads with
``peft.PeftModel`` onto the family's own model and gives the adapted tower's outputs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import medvl  # noqa: F401  (first: it makes torchvision, which peft's transformers import pulls in, importable)

pytest.importorskip("peft")
pytest.importorskip("timm")
pytest.importorskip("open_clip")

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from _training_data import (
    TINY_OPEN_CLIP,
    published_run_config,
    run_config_dict,
    train_tokenizer_file,
    write_tiny_dataset,
)
from _training_tiny import train_kill_resume

from medvl.cli.main import build_app
from medvl.config.loading import ConfigError, config_from_dict
from medvl.config.model import ModelConfig
from medvl.config.training import RunConfig
from medvl.data.dataset import ImageTextDataset, collate, select_split
from medvl.data.manifest import read_manifest
from medvl.models import DualEncoder, build_model
from medvl.models.loading.medvl import load_trained_model
from medvl.training import resolve_checkpoint

RANK = 4
TIMM_VIT = {"kind": "timm", "model_name": "test_vit", "model_args": {"img_size": 32, "depth": 2}}
TEST_VIT_WIDTH, TEST_VIT_DEPTH = 64, 6  # timm's test_vit (BiomedCLIP layout's trunk): embed_dim 64, depth 6


def _fused_qkv(layers: int, width: int) -> int:
    """LoRA parameters on ``layers`` fused query/key/value projections (width → 3·width): A (r, w), B (3w, r)."""
    return layers * RANK * (width + 3 * width)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), n=18, size=32)


def _family(name: str, dataset: Path, family_dir: Callable[[str], Path]) -> tuple[dict[str, Any], dict[str, int]]:
    """(the run's ``model`` section with ``lora: {r: 4}`` on the family's towers, expected adapter parameters per tower)."""
    lora = {"lora": {"r": RANK, "alpha": 8}}
    heads = {"classifiers": {"findings": {"kind": "multilabel", "num_classes": 3}}}
    if name == "timm":  # 2 blocks × qkv (64 → 192); the text tower is medvl's tiny one, not adapted
        text = run_config_dict(dataset, train_tokenizer_file(dataset))["model"]["text"]  # type: ignore[index]
        return ({"embed_dim": 8, "vision": {**TIMM_VIT, **lora}, "text": text, **heads},
                {"vision": _fused_qkv(2, TEST_VIT_WIDTH)})
    directory = str(family_dir(name))
    model = {"embed_dim": 16, "vision": {"kind": "open_clip", "model": directory, **lora},
             "text": {"kind": "open_clip", "model": directory, **lora},
             "vision_projection": {"kind": "identity"}, "text_projection": {"kind": "identity"}, **heads}
    if name == "open_clip":  # one block per tower, nn.MultiheadAttention's in_proj (32 → 96)
        vit = TINY_OPEN_CLIP["vision_cfg"]
        return model, {"vision": _fused_qkv(1, int(vit["width"])), "text": _fused_qkv(1, int(vit["width"]))}
    # BiomedCLIP's layout: timm trunk's 6 × qkv (64 → 192); BERT's query and value (32 → 32) in its 1 layer
    return model, {"vision": _fused_qkv(TEST_VIT_DEPTH, TEST_VIT_WIDTH), "text": 1 * 2 * RANK * (32 + 32)}


def _peft_base(name: str, tower: str, family_dir: Callable[[str], Path], initial: dict[str, torch.Tensor]) -> Any:
    """The family's own model for ``tower`` (what the exported adapter loads onto), with the run's base weights."""
    if name == "timm":
        import timm

        model = timm.create_model("test_vit", img_size=32, depth=2, num_classes=0)
        model.load_state_dict({k.removeprefix("vision.model.").replace("base_layer.", ""): v
                               for k, v in initial.items() if k.startswith("vision.model.") and "lora_" not in k})
        return model.eval()
    import open_clip

    # medvl's text tower is open_clip's custom-text layout (``model.text``), which open_clip builds and
    # converts a CLIP checkpoint to with force_custom_text
    published, _ = open_clip.create_model_from_pretrained(f"local-dir:{family_dir(name)}", force_custom_text=True)
    return (published.visual if tower == "vision" else published.text).eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["timm", "open_clip", "biomedclip"])
def test_lora_on_published_towers_trains_resumes_and_exports(name: str, dataset: Path, tmp_path: Path,
                                                            family_dir: Callable[[str], Path]) -> None:
    import peft

    model_section, expected = _family(name, dataset, family_dir)
    data = published_run_config(dataset, model_section)
    cfg = config_from_dict(data, RunConfig)

    # (a) exactly the adapters of the adapted towers train
    model = build_model(cfg.model)
    for tower, count in expected.items():
        trainable = {n: p.numel() for n, p in getattr(model, tower).named_parameters() if p.requires_grad}
        assert all("lora_" in n for n in trainable), (tower, trainable)
        assert sum(trainable.values()) == count, (tower, sum(trainable.values()))

    # (b) killed after step 3 and resumed = uninterrupted, bit for bit (train_kill_resume asserts it)
    run = train_kill_resume(data, tmp_path)
    initial = load_file(str(run / "model" / "model.safetensors"))  # the model as built, before step 1
    last = load_file(str(resolve_checkpoint(run, "last") / "model.safetensors"))
    for tower in expected:
        keys = [k for k in initial if k.startswith(f"{tower}.")]
        assert [k for k in keys if "lora_" not in k and not torch.equal(initial[k], last[k])] == [], tower
        assert all(not torch.equal(initial[k], last[k]) for k in keys if "lora_B" in k), tower  # adapters trained

    # (c) merged export = the adapted model, loadable without peft; the adapter file loads with peft
    out = tmp_path / "export"
    result = CliRunner().invoke(build_app(), ["models", "export", str(run), "--out", str(out), "--which", "last",
                                              "--merge-lora", "--adapters"])
    assert result.exit_code == 0, result.output
    assert not [k for k in load_file(str(out / "model.safetensors")) if "lora" in k or "base_layer" in k]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "peft", None)  # `import peft` fails: the merged model must not need it
        merged = DualEncoder.from_pretrained(out).eval()
    assert merged.config.vision.lora is None and (merged.config.text is None or merged.config.text.lora is None)
    adapted = load_trained_model(run, "last").eval()
    manifest = read_manifest(cfg.data.manifest)
    records = ImageTextDataset.from_config(select_split(manifest, cfg.data, "test"), cfg.data, train=False, seed=0)
    batch = collate([records[i] for i in range(3)])
    texts = ["there is effusion.", "findings: no finding.", "there is nodule and edema."]
    with torch.no_grad():
        torch.testing.assert_close(merged.encode_image(batch), adapted.encode_image(batch), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(merged.encode_text(texts), adapted.encode_text(texts), rtol=1e-5, atol=1e-5)
        for tower in expected:
            base = _peft_base(name, tower, family_dir, initial)
            with_adapter = peft.PeftModel.from_pretrained(base, out / "adapters" / tower).eval()
            if tower == "vision":
                inputs: Any = batch["pixel_values"]
                ours = adapted.vision.core(inputs)
            else:
                inputs = adapted.text.tokenize(texts)["input_ids"]
                ours = adapted.text.core(inputs)
            theirs = with_adapter(inputs)
            torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
            with with_adapter.disable_adapter():  # the family's model without the adapter differs
                assert not torch.allclose(with_adapter(inputs), ours, atol=1e-4)


def test_multihead_attention_targets_and_errors_name_the_key() -> None:
    """open_clip's ``nn.MultiheadAttention``: adapted on its fused in_proj weight through a parametrization
    (the frozen weight object and values never change in a forward/backward), and the settings peft cannot
    honour there are config errors naming the key."""
    vision = {"kind": "open_clip", "model_cfg": TINY_OPEN_CLIP}

    def build(lora: dict[str, Any]) -> DualEncoder:
        return build_model(ModelConfig.model_validate({"embed_dim": 16, "vision": {**vision, "lora": lora},
                                                       "text": None}))

    model = build({"r": RANK})
    tower = model.vision
    assert tower.lora_modules == ["transformer.resblocks.0.attn", "transformer.resblocks.1.attn"]
    assert tower.lora_targets == {"target_modules": [], "target_parameters": ["attn.in_proj_weight"]}
    frozen = {n: (p, p.detach().clone()) for n, p in tower.named_parameters() if not p.requires_grad}
    with torch.no_grad():
        for n, p in tower.named_parameters():
            if "lora_B" in n:
                p.normal_()
    tower(torch.randn(2, 3, 32, 32)).sum().backward()
    after = dict(tower.named_parameters())
    for n, (param, value) in frozen.items():  # same Parameter objects, same bits
        assert after[n] is param and torch.equal(param, value), n
    assert all(p.grad is not None for n, p in after.items() if "lora_" in n)
    assert build({"r": RANK, "target_modules": ["attn"]}).vision.lora_targets["target_parameters"] == [
        "attn.in_proj_weight"]

    with pytest.raises(ConfigError, match=r"model.vision.lora.target_modules: 'out_proj' is the out_proj"):
        build({"target_modules": ["out_proj"]})
    with pytest.raises(ConfigError, match=r"model.vision.lora.dropout=0.1"):
        build({"dropout": 0.1})
    with pytest.raises(ConfigError, match=r"model.vision.lora.bias=lora_only"):
        build({"bias": "lora_only"})
    with pytest.raises(ConfigError, match=r"model.vision.lora.target_modules=\['nope'\]: 'nope' names no module"):
        build({"target_modules": ["nope"]})
    mlp = build({"r": RANK, "target_modules": ["c_fc"], "dropout": 0.1})  # Linear layers keep LoRA dropout
    assert [n for n, p in mlp.vision.named_parameters() if p.requires_grad] and mlp.vision.lora_targets == {
        "target_modules": ["c_fc"], "target_parameters": []}
