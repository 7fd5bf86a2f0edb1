"""WebDataset shards: manifest → shards → stream, exactly once across ranks × workers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from medvl.data.images import load_image
from medvl.data.manifest import Manifest, TaskSpec
from medvl.data.shards import ShardIndex, ShardStream, write_shards


def _manifest(root: Path, n: int = 23) -> Manifest:
    rows = []
    for k in range(n):
        name = f"img/{k}.png" if k % 5 else f"img/{k}.npy"
        (root / "img").mkdir(parents=True, exist_ok=True)
        pixels = np.full((4, 5), k * 10 % 255, dtype=np.uint8)
        if name.endswith(".png"):
            Image.fromarray(pixels).save(root / name)
        else:
            np.save(root / name, pixels)
        rows.append({"id": f"rec.{k}/x", "image": name, "texts": [f"caption {k}", "second"],
                     "labels.finding": [float(k % 2), float(k % 3 == 0)], "group": f"p{k // 2}",
                     "split": "train" if k % 4 else "test", "fold": k % 3, "source": "unit"})
    tasks = [TaskSpec("finding", "multilabel", ("a", "b"))]
    return Manifest(pd.DataFrame(rows), tasks, root)


def _ids(stream: ShardStream, workers: int) -> list[str]:
    loader = DataLoader(stream, batch_size=None, num_workers=workers)
    return [item["id"] for item in loader]


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_record_exactly_once_across_ranks_and_workers(tmp_path: Path, shuffle: bool) -> None:
    manifest = _manifest(tmp_path / "data")
    index = write_shards(manifest, tmp_path / "shards", shard_size=3)
    assert len(index.shards) == 8 and index.total == 23
    seen: Counter[str] = Counter()
    per_rank = []
    for rank in range(2):
        stream = ShardStream(tmp_path / "shards", rank=rank, world_size=2, shuffle=shuffle, seed=7,
                             shuffle_buffer=4, decode=False)
        stream.set_epoch(1)
        ids = _ids(stream, workers=2)
        assert len(ids) == len(stream)
        per_rank.append(len(ids))
        seen.update(ids)
    assert seen == Counter(manifest.records["id"])
    assert per_rank == index.records_per_rank(2, epoch=1, seed=7, shuffle=shuffle)


def test_shuffle_is_seeded_and_changes_with_epoch(tmp_path: Path) -> None:
    write_shards(_manifest(tmp_path / "data"), tmp_path / "shards", shard_size=4)

    def order(epoch: int, seed: int) -> list[str]:
        stream = ShardStream(tmp_path / "shards", rank=0, world_size=1, shuffle=True, seed=seed, shuffle_buffer=5,
                             decode=False)
        stream.set_epoch(epoch)
        return [item["id"] for item in stream]

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(1, 1)
    assert sorted(order(0, 1)) == sorted(order(2, 5))


def test_round_trip_content_and_decoding(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "data", n=6)
    index = write_shards(manifest, tmp_path / "shards", shard_size=4)
    assert index.tasks == manifest.tasks
    assert index.meta["manifest_hash"] == manifest.hash()
    items = {item["id"]: item for item in ShardStream(index, rank=0, world_size=1, channels=None)}
    row = manifest.records.set_index("id").loc["rec.3/x"]
    item = items["rec.3/x"]
    assert item["record"]["texts"] == ["caption 3", "second"]
    assert item["record"]["labels.finding"] == [1.0, 1.0]
    assert item["record"]["group"] == "p1" and item["record"]["fold"] == 0
    expected = load_image(tmp_path / "data" / row["image"], "image")
    assert torch.equal(item["image"], expected)
    assert items["rec.0/x"]["ext"] == "npy" and items["rec.0/x"]["image"].shape == (1, 4, 5)
    test_only = [i["id"] for i in ShardStream(index, rank=0, world_size=1, split="test", decode=False)]
    assert sorted(test_only) == sorted(manifest.records.loc[manifest.records["split"] == "test", "id"])


def test_missing_file_error_or_skip(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "data", n=5)
    (tmp_path / "data/img/2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"record rec\.2/x"):
        write_shards(manifest, tmp_path / "a", shard_size=2)
    index = write_shards(manifest, tmp_path / "b", shard_size=2, on_bad_sample="skip")
    assert index.total == 4 and index.meta["skipped"] == [{"id": "rec.2/x", "reason": "cannot read img/2.png"}]
    with pytest.raises(FileExistsError):
        write_shards(manifest, tmp_path / "b", shard_size=2, on_bad_sample="skip")
    assert ShardIndex.read(tmp_path / "b").counts == (2, 2)


@pytest.mark.parametrize("train", [True, False])
def test_items_mode_matches_the_map_style_dataset(tmp_path: Path, train: bool) -> None:
    from medvl.data.dataset import ImageTextDataset, collate

    manifest = _manifest(tmp_path / "data", n=9)
    manifest.records["text_labels.finding"] = [[[1.0, 0.0], [0.0, 1.0]] for _ in range(9)]
    manifest.records["label_mask.finding"] = [[True, k % 2 == 0] for k in range(9)]
    write_shards(manifest, tmp_path / "shards", shard_size=4)
    dataset = ImageTextDataset(manifest, train=train, seed=3, channels=1)
    dataset.set_epoch(2)
    stream = ShardStream(tmp_path / "shards", rank=0, world_size=1, items=True, train=train, seed=3, channels=1)
    stream.set_epoch(2)
    streamed = sorted(stream, key=lambda item: item["index"])
    assert len(streamed) == len(dataset)
    a, b = collate([dataset[i] for i in range(len(dataset))]), collate(streamed)
    assert a["ids"] == b["ids"] and a["texts"] == b["texts"]
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    for key in ("labels", "label_mask"):
        assert torch.equal(a[key]["finding"], b[key]["finding"])
    if train:
        assert torch.equal(a["text_index"], b["text_index"])
        assert torch.equal(a["text_labels"]["finding"], b["text_labels"]["finding"])
    else:
        assert torch.equal(a["caption_to_image"], b["caption_to_image"])
