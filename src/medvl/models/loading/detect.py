"""Tell a model spec's format from the checkpoint's own metadata files — never from its name.

=================  ====================================================================
format             recognised by
=================  ====================================================================
``embeddings``     an EmbeddingSet directory (``embeddings.json`` + ``embeddings.safetensors``)
                   or an ``.npz`` file of precomputed arrays
``medvl_run``      a training run directory: ``model/config.json`` whose ``format`` is
                   ``medvl.dual_encoder`` (+ ``checkpoints/``)
``medvl_model``    a ``DualEncoder.save_pretrained`` directory (``config.json`` with that format)
``open_clip``      ``open_clip_config.json`` with a ``model_cfg`` (+ ``open_clip_model.safetensors``
                   / ``open_clip_pytorch_model.bin``)
``timm``           ``config.json`` with ``architecture`` (timm's hub layout, usually with
                   ``pretrained_cfg``) + weights
``hf``             ``config.json`` with ``model_type`` or ``architectures`` (transformers)
=================  ====================================================================

A spec that is not a local path — ``hf-hub:org/name`` or ``org/name`` — is resolved to its
local snapshot in the Hugging Face cache (downloaded only when the hub is reachable and
``HF_HUB_OFFLINE`` is unset), then recognised the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvl.models.loading.base import ModelLoadError

__all__ = ["FORMATS", "Detected", "detect_format", "resolve_spec"]

FORMATS = ("embeddings", "medvl_run", "medvl_model", "open_clip", "timm", "hf")
MEDVL_FORMAT = "medvl.dual_encoder"
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
LOOKED_FOR = (
    "an EmbeddingSet directory (embeddings.json + embeddings.safetensors) or an .npz file; "
    "a medvl run directory (model/config.json with format medvl.dual_encoder) or model directory; "
    "an open_clip directory (open_clip_config.json with model_cfg, + weights) or hf-hub: id; "
    "a timm directory (config.json with 'architecture' / pretrained_cfg, + weights); "
    "a Hugging Face directory (config.json with model_type / architectures)"
)


@dataclass(frozen=True)
class Detected:
    """A recognised spec: its ``format`` (one of :data:`FORMATS`), local ``path`` and the metadata read."""

    format: str
    path: Path
    spec: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def resolve_spec(spec: str | os.PathLike[str]) -> Path:
    """A local path as is; ``hf-hub:org/name`` or ``org/name`` → the local Hugging Face snapshot."""
    text = str(spec)
    repo = text[len("hf-hub:"):] if text.startswith("hf-hub:") else None
    path = Path(text).expanduser()
    if repo is None:
        if path.exists():
            return path
        if text.count("/") != 1 or text.startswith((".", "/", "~")):
            raise ModelLoadError(f"{text}: no such file or directory (looked for {LOOKED_FOR})")
        repo = text
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo))
    except Exception as exc:  # offline, unknown repo, no network: say so plainly
        raise ModelLoadError(
            f"{text}: not a local path, and the hub repository {repo!r} could not be fetched "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); download it first "
            "(huggingface-cli download) or pass the local directory"
        ) from None


def detect_format(spec: str | os.PathLike[str]) -> Detected:
    """Recognise ``spec`` by its metadata files (see the module docstring); unknown → :class:`ModelLoadError`."""
    path = resolve_spec(spec)
    text = str(spec)
    if path.is_file():
        if path.suffix == ".npz":
            return Detected("embeddings", path, text, {"kind": "npz"})
        raise ModelLoadError(f"{path}: a file that is not an .npz of embeddings; looked for {LOOKED_FOR}")
    if not path.is_dir():
        raise ModelLoadError(f"{path}: not a file or directory")
    if (path / "embeddings.json").is_file() and (path / "embeddings.safetensors").is_file():
        return Detected("embeddings", path, text, {"kind": "EmbeddingSet"})
    run_model = _read_json(path / "model" / "config.json")
    if run_model is not None and run_model.get("format") == MEDVL_FORMAT:
        return Detected("medvl_run", path, text, run_model)
    config = _read_json(path / "config.json")
    if config is not None and config.get("format") == MEDVL_FORMAT:
        return Detected("medvl_model", path, text, config)
    oc = _read_json(path / OPEN_CLIP_CONFIG)
    if oc is not None:
        if "model_cfg" not in oc:
            raise ModelLoadError(f"{path / OPEN_CLIP_CONFIG}: has no 'model_cfg' (not an open_clip model config)")
        if not any((path / w).is_file() for w in OPEN_CLIP_WEIGHTS):
            raise ModelLoadError(f"{path}: open_clip_config.json but no weights ({' or '.join(OPEN_CLIP_WEIGHTS)})")
        return Detected("open_clip", path, text, oc)
    if config is not None and ("architecture" in config or "pretrained_cfg" in config) and "model_type" not in config:
        if "architecture" not in config:
            raise ModelLoadError(f"{path / 'config.json'}: timm pretrained_cfg without 'architecture'")
        return Detected("timm", path, text, config)
    if config is not None and ("model_type" in config or "architectures" in config):
        return Detected("hf", path, text, config)
    found = sorted(p.name for p in path.iterdir())[:12]
    raise ModelLoadError(f"{path}: not a model format medvl knows. Looked for {LOOKED_FOR}. Found: {found}")
