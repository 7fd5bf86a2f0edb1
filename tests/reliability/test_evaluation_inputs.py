"""Evaluation inputs: the embedding cache never serves stale or corrupt entries; labels are what they claim."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import medvl_in_process, train_one_epoch


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return train_one_epoch(tmp_path_factory.mktemp("trained"), shared_data)[1]


def _evaluate(capsys: pytest.CaptureFixture[str], run: Path, manifest: Path, cache: Path, out: Path) -> str:
    code, _, err = medvl_in_process(capsys, "evaluate", "--checkpoint", str(run), "--data", str(manifest), "--tasks", "retrieval",
                       "--out", str(out), "--set", f"cache_dir={cache}", "--set", "progress=false")
    assert code == 0, err
    return err


def test_replaced_image_is_not_served_from_the_embedding_cache(
        tmp_path: Path, trained: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    shutil.copytree(shared_data.parent, data)
    cache = tmp_path / "cache"
    _evaluate(capsys, trained, data / "manifest.parquet", cache, tmp_path / "e1")
    Image.fromarray(np.full((16, 16), 250, dtype=np.uint8)).save(data / "images" / "21.png")  # a test image
    _evaluate(capsys, trained, data / "manifest.parquet", cache, tmp_path / "e2")
    entries = sorted(p for p in cache.iterdir() if p.is_dir())
    assert len(entries) == 2  # a second extraction, not the stale entry
    from medvl.evaluation.embeddings import EmbeddingSet

    first, second = (EmbeddingSet.load(p) for p in entries)
    row = first.image_ids.index("case21")
    assert not np.allclose(first.image_emb[row], second.image_emb[row])


def test_corrupt_cache_entry_is_recomputed_with_a_warning(
        tmp_path: Path, trained: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    _evaluate(capsys, trained, shared_data, cache, tmp_path / "e1")
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    tensors = entry / "embeddings.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])  # truncated (disk full, killed copy)
    err = _evaluate(capsys, trained, shared_data, cache, tmp_path / "e2")
    assert "recomputing" in err and str(entry) in err
    from medvl.evaluation.embeddings import EmbeddingSet

    assert EmbeddingSet.load(entry).num_images == 4  # rewritten whole
    first = json.loads((tmp_path / "e1" / "results.json").read_text())["tasks"]["retrieval"]["metrics"]
    again = json.loads((tmp_path / "e2" / "results.json").read_text())["tasks"]["retrieval"]["metrics"]
    assert first == again


def test_multilabel_labels_outside_0_1_are_rejected_naming_row_and_task() -> None:
    """CheXpert's -1 (uncertain) is not silently a negative: map it, or mask it explicitly."""
    from medvl.evaluation.classification import evaluate_embedding_heads
    from medvl.evaluation.embeddings import EmbeddingSet, EmbeddingSetError

    rng = np.random.default_rng(0)
    labels = np.array([[1, 0], [0, 1], [1, -1], [0, 0]], dtype=np.float32)
    tasks = {"chexpert": {"kind": "multilabel", "classes": ["Edema", "Effusion"]}}
    logits = {"chexpert": rng.normal(size=(4, 2))}
    with pytest.raises(EmbeddingSetError, match=r"labels\['chexpert'\].*rows 2 \('c2'\).*class 1 \(Effusion\) = -1"):
        EmbeddingSet.from_arrays(rng.normal(size=(4, 8)), image_ids=["c0", "c1", "c2", "c3"], labels={"chexpert": labels},
                                 tasks=tasks, logits=logits)
    masked = EmbeddingSet.from_arrays(rng.normal(size=(4, 8)), image_ids=["c0", "c1", "c2", "c3"],
                                      labels={"chexpert": labels}, tasks=tasks, logits=logits,
                                      label_mask={"chexpert": labels >= 0})
    assert evaluate_embedding_heads(masked)["metrics"]  # the masked uncertain label is simply not scored
    masked.labels["chexpert"] = np.where(labels < 0, 2.0, labels)  # replaced after construction, unmasked 2
    masked.label_mask.pop("chexpert")
    with pytest.raises(EmbeddingSetError, match=r"rows 2 \('c2'\)"):
        evaluate_embedding_heads(masked)
