"""medvl.evaluation: embeddings, retrieval, classification, zero-shot, linear probes, the suite.

Modules (one concept each): ``embeddings`` (EmbeddingSet), ``extraction`` (model → EmbeddingSet),
``retrieval``, ``classification``, ``zeroshot``, ``probe``, ``aggregate``, ``suite`` (runs the
configured tasks), ``results`` (results.json / CSV / Markdown), ``validation`` (the trainer's
per-epoch hook), ``alignment/`` (modality-alignment diagnostics). The names below are imported
lazily so that ``import medvl.evaluation.alignment`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EmbeddingSet": "embeddings",
    "TaskInfo": "embeddings",
    "evaluate_retrieval": "retrieval",
    "evaluate_classification": "classification",
    "evaluate_embedding_heads": "classification",
    "evaluate_zeroshot": "zeroshot",
    "load_prompts": "zeroshot",
    "evaluate_probe": "probe",
    "aggregate_metrics": "aggregate",
    "extract_embeddings": "extraction",
    "evaluate_embeddings": "suite",
    "run_evaluation": "suite",
    "write_results": "results",
    "validation_metrics": "validation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"medvl.evaluation.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'medvl.evaluation' has no attribute {name!r}")
