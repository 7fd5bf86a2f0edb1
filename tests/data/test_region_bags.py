"""Region-token feature bags (M, T, d): loading by layout, padding in collate, through the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medvl.data.dataset import ImageTextDataset, collate
from medvl.data.images import ImageLoadError, load_feature_bag
from medvl.data.manifest import Manifest, TaskSpec


def test_layouts_of_three_dimensional_bags(tmp_path: Path) -> None:
    tokens = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    np.save(tmp_path / "tokens.npy", tokens)
    assert load_feature_bag(tmp_path / "tokens.npy").shape == (3, 4, 5)  # auto: region tokens
    assert load_feature_bag(tmp_path / "tokens.npy", layout="regions").shape == (3, 4, 5)
    with pytest.raises(ImageLoadError, match=r"must be \(n_regions, d\) \(layout flat\)"):
        load_feature_bag(tmp_path / "tokens.npy", layout="flat")
    one_region = tokens[:1]
    np.save(tmp_path / "one.npy", one_region)
    # (1, T, d): CLAM's batched flat bag under auto/flat, one region of T tokens under regions
    assert load_feature_bag(tmp_path / "one.npy").shape == (4, 5)
    assert load_feature_bag(tmp_path / "one.npy", layout="regions").shape == (1, 4, 5)
    torch.save(torch.from_numpy(tokens[None]), tmp_path / "batched.pt")
    assert load_feature_bag(tmp_path / "batched.pt", layout="regions").shape == (3, 4, 5)
    np.save(tmp_path / "empty.npy", np.zeros((2, 0, 5), dtype=np.float32))
    with pytest.raises(ImageLoadError, match=r"empty"):
        load_feature_bag(tmp_path / "empty.npy")


def test_collate_pads_regions_and_tokens_with_masks() -> None:
    items = []
    for i, shape in enumerate([(2, 4, 3), (3, 4, 3)]):
        items.append({"id": f"s{i}", "index": i, "bag": torch.ones(shape), "texts": ["t"], "labels": {},
                      "label_mask": {}})
    batch = collate(items)
    assert batch["bag"].shape == (2, 3, 4, 3) and "token_mask" not in batch
    assert batch["bag_mask"].tolist() == [[True, True, False], [True, True, True]]
    items[0]["bag"] = torch.ones(2, 1, 3)
    batch = collate(items)
    assert batch["token_mask"][0].tolist() == [[True, False, False, False]] * 2 + [[False] * 4]
    items[0]["bag"] = torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"flat .* and region-token"):
        collate(items)


def test_region_token_dataset_through_a_hierarchical_model(tmp_path: Path) -> None:
    from medvl.config.model import ModelConfig
    from medvl.models import build_model

    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        np.save(tmp_path / f"s{i}.npy", rng.normal(size=(i + 1, 4, 6)).astype(np.float32))
        rows.append({"id": f"s{i}", "image": f"s{i}.npy", "image_type": "feature_bag", "texts": [f"grade {i % 2}"],
                     "labels.grade": i % 2, "group": f"p{i}", "split": "train", "fold": -1})
    manifest = Manifest(pd.DataFrame(rows), [TaskSpec("grade", "ordinal", ("low", "high"))], root=tmp_path)
    ds = ImageTextDataset(manifest, train=False, bag_layout="regions", verify_files=True)
    batch = collate([ds[i] for i in range(4)])
    assert batch["bag"].shape == (4, 4, 4, 6)
    model = build_model(ModelConfig.model_validate({
        "embed_dim": 8, "text": None,
        "vision": {"kind": "slide", "region": {"patch_dim": 6, "tokens": 4, "width": 4, "depth": 1, "heads": 2},
                   "width": 6, "heads": 2}})).eval()
    out = model(batch)
    assert out["image_embeds"].shape == (4, 8)
    single = model(collate([ds[0]]))["image_embeds"]
    torch.testing.assert_close(out["image_embeds"][:1], single, rtol=1e-5, atol=1e-5)
