"""The tiny run config the sweep tests train on the synthetic generator's data (a few seconds a cell).

A tiny CNN and a tiny text tower on 32 × 32 grey images, CLIP + BCE on the ``findings`` task; the
sweep tests of ``tests/experiments`` and ``tests/reliability`` share it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def synthetic_run_config(manifest: Path, *, balance: float, **training: Any) -> dict[str, Any]:
    """A run config dict on ``manifest`` (a ``generate_dataset`` output) with objective balance λ =
    ``balance``; ``training`` keys (``epochs``, ``batch_size``, …) go into its ``training`` section."""
    return {
        "seed": 0,
        "data": {"manifest": str(manifest), "image_size": 32, "channels": 1, "caption": {"mode": "join"}},
        "model": {
            "embed_dim": 16,
            "vision": {"kind": "tiny_cnn", "in_channels": 1, "widths": [8, 16]},
            "text": {"kind": "tiny_text", "vocab_size": 256, "max_length": 48, "width": 16, "depth": 1, "heads": 2},
            "classifiers": {"findings": {"kind": "multilabel", "num_classes": 10}},
        },
        "objective": {"balance": balance, "terms": [{"name": "clip", "kind": "clip"},
                                                    {"name": "bce", "kind": "bce", "options": {"task": "findings"}}]},
        "training": {"logging": {"progress_bar": False}, **training},
    }
