"""Tiny benchmark inputs: synthetic manifests with exported random embeddings (no model to load).

The embedding sets' sizes are independent of the manifest (which only names the tasks), so a
test can make one unit slow (a large train split for the probe) and the others instant.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml


def exported_dataset(root: Path, name: str, *, n_train: int = 40, dim: int = 16, seed: int = 0) -> Path:
    """``root/data/<name>/manifest.parquet`` (48 synthetic records) and exported embeddings under
    ``root/exported/<name>/{train,val,test}`` (``n_train`` train rows, a quarter of that per eval split)."""
    from medvl.data.manifest import read_manifest
    from medvl.data.synthetic.generator import SynthConfig, generate_dataset
    from medvl.evaluation.embeddings import EmbeddingSet

    data = root / "data" / name
    if not (data / "manifest.parquet").is_file():
        generate_dataset(data, SynthConfig(n=48, seed=seed + 1, size=32, n_folds=0, val_fraction=0.15))
    tasks = read_manifest(data / "manifest.parquet").tasks
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        n = n_train if split == "train" else max(12, n_train // 4)
        labels = {}
        for task_name, task in tasks.items():
            k = len(task.classes)
            labels[task_name] = ((rng.random((n, k)) < 0.3).astype(np.float32) if task.kind == "multilabel"
                                 else np.arange(n) % k)  # every class present
        images = rng.normal(size=(n, dim)).astype(np.float32)
        texts = images + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
        EmbeddingSet.from_arrays(images, texts, labels=labels, tasks={k: v.to_dict() for k, v in tasks.items()}
                                 ).save(root / "exported" / name / split)
    return data / "manifest.parquet"


def write_benchmark(root: Path, datasets: list[str], *, extra: dict | None = None) -> Path:
    """``root/bench.yaml``: the exported model on ``datasets``, retrieval then the probe (one seed, all shots)."""
    config = {
        "models": [{"name": "exported", "embeddings": "exported/{dataset}/{split}"}],
        "datasets": [{"name": d, "manifest": f"data/{d}/manifest.parquet"} for d in datasets],
        "tasks": ["retrieval", "probe"],
        "eval": {"probe": {"features": "projected", "validation": "train_fraction", "shots": ["all"], "seeds": [0]}},
        "executor": {"poll_s": 0.2},
        **(extra or {}),
    }
    path = root / "bench.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
