"""Hierarchical slide encoder (HIPT's region → slide levels): shapes, masks, freezing and the
documented HIPT key mapping, checked against an independent statement of HIPT's forward."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medvl.config.model import ModelConfig, RegionTransformerConfig, SlideEncoderConfig
from medvl.models import build_model
from medvl.models.encoders.hipt import HIPTWeightsError, load_slide_weights, map_hipt_keys
from medvl.models.encoders.slide import SlideEncoder

PATCH, REGION_W, SLIDE_W = 8, 6, 6


def _config(tokens: int = 4, pos_grid: int | None = None, **kw: object) -> SlideEncoderConfig:
    region = RegionTransformerConfig(patch_dim=PATCH, tokens=tokens, width=REGION_W, depth=2, heads=2,
                                     mlp_ratio=2.0, pos_grid=pos_grid)
    return SlideEncoderConfig(region=region, width=SLIDE_W, depth=2, heads=3, dropout=0.25, **kw)


def test_region_token_and_region_feature_bags_give_slide_embeddings() -> None:
    enc = SlideEncoder(_config()).eval()
    tokens = torch.randn(2, 3, 4, PATCH)
    out = enc(tokens)
    assert out.shape == (2, SLIDE_W)
    regions, mask = enc.region_features(tokens)
    assert regions.shape == (2, 3, REGION_W) and mask.all()
    # region features skip the region level and give the same slide embedding
    torch.testing.assert_close(enc(regions), out)
    with pytest.raises(ValueError, match=r"\(B, N, 6\)"):
        enc(torch.randn(2, 3, PATCH))
    with pytest.raises(ValueError, match=r"square grid"):
        enc(torch.randn(1, 2, 3, PATCH))


def test_padding_regions_and_padding_tokens_change_nothing() -> None:
    enc = SlideEncoder(_config()).eval()
    a = torch.randn(1, 2, 4, PATCH)
    alone = enc(a)
    padded = torch.full((1, 5, 4, PATCH), float("nan"))  # NaN padding would poison anything that read it
    padded[:, :2] = a
    mask = torch.tensor([[True, True, False, False, False]])
    torch.testing.assert_close(enc(padded, mask), alone)
    # in a batch with a longer bag, the short one is unchanged
    b = torch.randn(1, 5, 4, PATCH)
    batch = torch.cat([padded.nan_to_num(0.0), b])
    both = enc(batch, torch.cat([mask, torch.ones(1, 5, dtype=torch.bool)]))
    torch.testing.assert_close(both[0], alone[0])
    torch.testing.assert_close(both[1], enc(b)[0])
    weights = enc.attention_weights(padded.nan_to_num(0.0), mask)
    assert weights[0, 2:].abs().sum() == 0 and torch.isclose(weights.sum(), torch.tensor(1.0))
    # padded patch tokens inside a region are ignored when token_mask marks them
    enc_r = enc.region
    assert enc_r is not None
    tok = torch.randn(1, 4, PATCH)
    noisy = tok.clone()
    noisy[:, 3] = 1e3
    keep = torch.tensor([[True, True, True, False]])
    torch.testing.assert_close(enc_r(noisy, keep), enc_r(tok, keep))
    assert not torch.allclose(enc_r(noisy), enc_r(tok))


def test_freeze_levels_freeze_whole_levels() -> None:
    cfg = ModelConfig.model_validate({"embed_dim": SLIDE_W, "vision": {**_config().model_dump(), "freeze_levels": ["region"]},
                                      "text": None, "vision_projection": {"kind": "identity"}})
    model = build_model(cfg)
    vision = model.vision
    assert isinstance(vision, SlideEncoder) and vision.region is not None
    assert not any(p.requires_grad for p in vision.region.parameters())
    slide_params = [p for n, p in vision.named_parameters() if not n.startswith("region.")]
    assert slide_params and all(p.requires_grad for p in slide_params)
    with pytest.raises(ValueError, match=r"either freeze_levels or freeze"):
        _config(freeze_levels=["slide"], freeze={"mode": "full"})
    with pytest.raises(ValueError, match=r"needs a region level"):
        SlideEncoderConfig(input_dim=4, freeze_levels=["region"])


# ----------------------------------------------------------------------------- HIPT weights


def _hipt_state_dict(depth: int = 2, slide_depth: int = 2, pos_grid: int = 3, prefix: str = "local_vit.",
                     seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under HIPT_LGP_FC's state-dict names and shapes (tiny widths)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.3

    d, s = REGION_W, SLIDE_W
    sd = {f"{prefix}phi.0.weight": r(d, PATCH), f"{prefix}phi.0.bias": r(d),
          f"{prefix}cls_token": r(1, 1, d), f"{prefix}pos_embed": r(1, pos_grid * pos_grid + 1, d),
          f"{prefix}norm.weight": 1 + r(d), f"{prefix}norm.bias": r(d)}
    for i in range(depth):
        b = f"{prefix}blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(d), b + "norm1.bias": r(d), b + "attn.qkv.weight": r(3 * d, d),
                   b + "attn.qkv.bias": r(3 * d), b + "attn.proj.weight": r(d, d), b + "attn.proj.bias": r(d),
                   b + "norm2.weight": 1 + r(d), b + "norm2.bias": r(d), b + "mlp.fc1.weight": r(2 * d, d),
                   b + "mlp.fc1.bias": r(2 * d), b + "mlp.fc2.weight": r(d, 2 * d), b + "mlp.fc2.bias": r(d)})
    sd.update({"global_phi.0.weight": r(s, d), "global_phi.0.bias": r(s)})
    layer = nn.TransformerEncoderLayer(d_model=s, nhead=3, dim_feedforward=s, dropout=0.25)
    for i in range(slide_depth):
        for name, value in layer.state_dict().items():
            sd[f"global_transformer.layers.{i}.{name}"] = r(*value.shape) + (1.0 if "norm" in name and
                                                                               "weight" in name else 0.0)
    for branch in ("a", "b"):
        sd[f"global_attn_pool.attention_{branch}.0.weight"] = r(s, s)
        sd[f"global_attn_pool.attention_{branch}.0.bias"] = r(s)
    sd.update({"global_attn_pool.attention_c.weight": r(1, s), "global_attn_pool.attention_c.bias": r(1),
               "global_rho.0.weight": r(s, s), "global_rho.0.bias": r(s),
               "classifier.weight": r(4, s), "classifier.bias": r(4)})
    return sd


def _hipt_reference(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int, depth: int, slide_depth: int,
                    prefix: str = "local_vit.") -> torch.Tensor:
    """HIPT's forward written out (ViT-4K on one slide's (M, T, d) tokens, then the global level)."""
    m, t, _ = x.shape
    side, d = math.isqrt(t), REGION_W

    def w(name: str) -> torch.Tensor:
        return sd[prefix + name]

    h = F.gelu(F.linear(x, w("phi.0.weight"), w("phi.0.bias")))
    h = torch.cat([w("cls_token").expand(m, -1, -1), h], dim=1)
    pos = w("pos_embed")
    grid = math.isqrt(pos.shape[1] - 1)
    if grid != side:  # HIPT's interpolate_pos_encoding
        patch = pos[:, 1:].reshape(1, grid, grid, d).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, scale_factor=((side + 0.1) / grid, (side + 0.1) / grid), mode="bicubic")
        pos = torch.cat([pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, -1, d)], dim=1)
    h = h + pos
    for i in range(depth):
        b = f"blocks.{i}."
        y = F.layer_norm(h, (d,), w(b + "norm1.weight"), w(b + "norm1.bias"), eps=1e-6)
        qkv = F.linear(y, w(b + "attn.qkv.weight"), w(b + "attn.qkv.bias")).reshape(m, t + 1, 3, heads, d // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(m, t + 1, d)
        h = h + F.linear(y, w(b + "attn.proj.weight"), w(b + "attn.proj.bias"))
        y = F.layer_norm(h, (d,), w(b + "norm2.weight"), w(b + "norm2.bias"), eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, w(b + "mlp.fc1.weight"), w(b + "mlp.fc1.bias"))),
                     w(b + "mlp.fc2.weight"), w(b + "mlp.fc2.bias"))
        h = h + y
    regions = F.layer_norm(h, (d,), w("norm.weight"), w("norm.bias"), eps=1e-6)[:, 0]
    g = F.relu(F.linear(regions, sd["global_phi.0.weight"], sd["global_phi.0.bias"]))
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(d_model=SLIDE_W, nhead=3, dim_feedforward=SLIDE_W,
                                                               dropout=0.25), num_layers=slide_depth,
                                 enable_nested_tensor=False)
    encoder.load_state_dict({k[len("global_transformer."):]: v for k, v in sd.items()
                             if k.startswith("global_transformer.")})
    g = encoder.eval()(g.unsqueeze(1)).squeeze(1)
    a = torch.tanh(F.linear(g, sd["global_attn_pool.attention_a.0.weight"], sd["global_attn_pool.attention_a.0.bias"]))
    bb = torch.sigmoid(F.linear(g, sd["global_attn_pool.attention_b.0.weight"],
                                sd["global_attn_pool.attention_b.0.bias"]))
    scores = F.linear(a * bb, sd["global_attn_pool.attention_c.weight"], sd["global_attn_pool.attention_c.bias"])
    pooled = F.softmax(scores.T, dim=1) @ g
    return F.relu(F.linear(pooled, sd["global_rho.0.weight"], sd["global_rho.0.bias"]))


@pytest.mark.parametrize("tokens,pos_grid", [(4, 3), (9, 3)])  # interpolated positions, then the stored grid
def test_hipt_state_dict_loads_by_the_documented_mapping_and_reproduces_hipt(tmp_path: Path, tokens: int,
                                                                             pos_grid: int) -> None:
    sd = _hipt_state_dict(pos_grid=pos_grid)
    path = tmp_path / "hipt_lgp_fc.pth"
    torch.save({"epoch": 12, "model": sd}, path)  # a training checkpoint around the state dict
    enc = SlideEncoder(_config(tokens=tokens, pos_grid=pos_grid))
    report = load_slide_weights(enc, path)
    assert report.levels == ["region", "slide"] and report.ignored == ["classifier.bias", "classifier.weight"]
    own = enc.state_dict()
    # spot-check the table in medvl.models.encoders.hipt
    assert torch.equal(own["region.embed.pos_embed"], sd["local_vit.pos_embed"])
    assert torch.equal(own["region.blocks.1.attn.in_proj_weight"], sd["local_vit.blocks.1.attn.qkv.weight"])
    assert torch.equal(own["region.blocks.0.attn.out_proj.bias"], sd["local_vit.blocks.0.attn.proj.bias"])
    assert torch.equal(own["region.blocks.0.mlp.3.weight"], sd["local_vit.blocks.0.mlp.fc2.weight"])
    assert torch.equal(own["layers.1.self_attn.in_proj_weight"], sd["global_transformer.layers.1.self_attn.in_proj_weight"])
    assert torch.equal(own["pool.attention_c.weight"], sd["global_attn_pool.attention_c.weight"])
    assert torch.equal(own["rho.0.bias"], sd["global_rho.0.bias"])
    x = torch.randn(5, tokens, PATCH)
    expected = _hipt_reference(sd, x, heads=2, depth=2, slide_depth=2)
    torch.testing.assert_close(enc.eval()(x.unsqueeze(0)), expected, rtol=1e-5, atol=1e-5)


def test_dino_teacher_checkpoint_fills_the_region_level_only(tmp_path: Path) -> None:
    full = _hipt_state_dict(prefix="")
    region_only = {f"module.backbone.{k}": v for k, v in full.items() if not k.startswith(("global_", "classifier"))}
    region_only["module.head.mlp.0.weight"] = torch.zeros(3, 3)  # DINO projection head: ignored
    path = tmp_path / "vit4k_xs_dino.pth"
    torch.save({"teacher": region_only, "student": {}}, path)
    enc = SlideEncoder(_config(tokens=4, pos_grid=3))
    before = enc.phi[0].weight.detach().clone()
    report = load_slide_weights(enc, path)
    assert report.levels == ["region"] and report.ignored == ["head.mlp.0.weight"]
    assert torch.equal(enc.state_dict()["region.embed.cls_token"], full["cls_token"])
    assert torch.equal(enc.phi[0].weight, before)


def test_weights_that_do_not_fit_fail_naming_the_keys(tmp_path: Path) -> None:
    sd = _hipt_state_dict(pos_grid=3)
    enc = SlideEncoder(_config(tokens=4))  # stored grid 2 ≠ the file's 3
    torch.save(sd, tmp_path / "a.pth")
    with pytest.raises(HIPTWeightsError, match=r"pos_embed .*set vision.region.pos_grid: 3"):
        load_slide_weights(enc, tmp_path / "a.pth")
    broken = dict(sd)
    del broken["local_vit.blocks.1.mlp.fc1.bias"]
    torch.save(broken, tmp_path / "b.pth")
    with pytest.raises(HIPTWeightsError, match=r"region level is incomplete.*blocks.1.mlp.0.bias"):
        load_slide_weights(SlideEncoder(_config(tokens=4, pos_grid=3)), tmp_path / "b.pth")
    odd = {**sd, "global_pos_encoder.weight": torch.zeros(2)}
    torch.save(odd, tmp_path / "c.pth")
    with pytest.raises(HIPTWeightsError, match=r"not in the documented HIPT mapping.*global_pos_encoder"):
        load_slide_weights(SlideEncoder(_config(tokens=4, pos_grid=3)), tmp_path / "c.pth")
    _, _, unknown = map_hipt_keys({"local_vit.blocks.0.attn.qkv.weight": torch.zeros(1), "foo": torch.zeros(1)})
    assert unknown == ["foo"]


class _Payload:
    """Not a tensor: torch.load(weights_only=True) must refuse to unpickle it."""


def test_pickled_code_is_never_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": _Payload()}, path)
    with pytest.raises(HIPTWeightsError, match=r"cannot read weights safely"):
        load_slide_weights(SlideEncoder(_config()), path)


def test_safetensors_weights_and_model_config_path(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in _hipt_state_dict(pos_grid=2).items()}
    save_file(sd, str(tmp_path / "hipt.safetensors"))
    cfg = ModelConfig.model_validate({
        "embed_dim": SLIDE_W, "text": None, "vision_projection": {"kind": "identity"},
        "vision": {**_config(tokens=4).model_dump(), "weights": str(tmp_path / "hipt.safetensors")}})
    model = build_model(cfg)
    assert torch.equal(model.state_dict()["vision.rho.0.weight"], sd["global_rho.0.weight"])
    # a saved model rebuilds from its own weights, without the HIPT file
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "hipt.safetensors").unlink()
    from medvl.models import DualEncoder

    again = DualEncoder.from_pretrained(tmp_path / "model")
    assert torch.equal(again.state_dict()["vision.rho.0.weight"], sd["global_rho.0.weight"])
