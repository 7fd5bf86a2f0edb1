"""What a benchmark reads: where its paths point, which exported embeddings its runs need, and
fingerprints of those files (so a finished run is stale when they change).

Every relative path written in a benchmark YAML — a model's ``spec`` directory, its
``embeddings`` template, a dataset's ``manifest``, ``root`` and a collection's ``data_dir``, and
in any ``eval`` section (top level, per dataset, per model) ``cache_dir``, ``vqa.manifest``,
``data.manifest``/``data.root`` and the files named by ``zeroshot.prompts`` and
``zeroshot.class_maps`` (a ``.yaml`` name, one with a ``/``, or one that exists next to the YAML;
a bare name is a shipped set) — is relative to the YAML file's directory, wherever the command is run
from. Paths given on the command line (``--model``, ``--embeddings``, ``--data``,
``--collection``, ``--set``) are relative to the working directory, as any CLI argument.

A model ``spec`` that is not a path is left exactly as written: an ``hf-hub:`` id, or an
``org/name`` hub repository when nothing of that name exists under the base directory (the model
front door's :func:`medvl.models.loading.detect.resolve_spec` rule). A hub-like spec that exists
relative to the working directory but not under the YAML's directory is ambiguous, and an error.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from medvl.config.benchmark import ModelEntry
from medvl.utils.errors import UserInputError
from medvl.utils.hashing import hash_object

__all__ = [
    "EMBEDDINGS_META",
    "check_model_specs",
    "exported_path",
    "exported_present",
    "exported_sources",
    "looks_like_hub_id",
    "missing_embeddings_message",
    "needed_splits",
    "resolve_benchmark_paths",
    "resolve_model_spec",
    "resolve_path",
    "source_fingerprint",
]

#: the file that makes a directory an exported EmbeddingSet (with ``embeddings.safetensors``)
EMBEDDINGS_META = "embeddings.json"
#: ``eval`` keys holding one path (dotted), and those mapping task names to a YAML file or a shipped name
_EVAL_PATHS = ("cache_dir", "vqa.manifest", "data.manifest", "data.root")
_EVAL_YAML_SOURCES = ("zeroshot.prompts", "zeroshot.class_maps")


def resolve_path(value: str | os.PathLike[str], base: Path) -> str:
    """``value`` joined to ``base`` unless absolute (``~`` is expanded first)."""
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def looks_like_hub_id(spec: str) -> bool:
    """``hf-hub:org/name``, or ``org/name`` as the model front door reads it when no such path exists."""
    if spec.startswith("hf-hub:") or "://" in spec:
        return True
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not spec.endswith("/")


def resolve_model_spec(spec: str, base: Path, *, where: str) -> str:
    """A model ``spec`` read from ``base``: a path joined to it, a hub reference left as written.

    ``org/name`` that exists under ``base`` is that directory; one that does not is a hub id —
    unless it exists relative to the working directory (and ``base`` is another directory), which
    is an error naming both places rather than a silent choice of either.
    """
    if spec.startswith("hf-hub:") or "://" in spec:
        return spec
    path = Path(spec).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = base / path
    if candidate.exists() or not looks_like_hub_id(spec):
        return str(candidate)
    if path.exists() and path.resolve() != candidate.resolve():
        raise UserInputError(
            f"{where}: spec {spec!r} is not under {base} (relative paths in a benchmark YAML are read from its "
            f"directory) but exists relative to the working directory ({path.resolve()}); write the path relative "
            f"to the YAML or absolute, or hf-hub:{spec} for the Hugging Face repository")
    return spec


def _resolve_eval(section: Any, base: Path) -> Any:
    if not isinstance(section, dict):
        return section
    out = copy.deepcopy(section)
    for dotted in _EVAL_PATHS:
        *parents, key = dotted.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(key), str) and node[key]:
            node[key] = resolve_path(node[key], base)
    for dotted in _EVAL_YAML_SOURCES:
        group, key = dotted.split(".")
        sources = (out.get(group) or {}).get(key) if isinstance(out.get(group), dict) else None
        if isinstance(sources, dict):  # a path (.yaml, a folder in it, or a file next to the YAML) or a shipped name
            for task, source in sources.items():
                if isinstance(source, str) and source and (Path(source).suffix in (".yaml", ".yml") or "/" in source
                                                           or (base / source).exists()):
                    sources[task] = resolve_path(source, base)
    return out


def _entries(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    return value if isinstance(value, list) else []  # anything else: the schema says what is wrong


def resolve_benchmark_paths(data: dict[str, Any], base: str | os.PathLike[str]) -> dict[str, Any]:
    """A copy of a benchmark config's raw ``data`` with every relative path joined to ``base`` (see the module doc).

    Idempotent: absolute paths and hub references are left as they are, so paths resolved against
    the YAML's directory stay put when what the command line added is resolved against the
    working directory afterwards.
    """
    root = Path(base).absolute()
    out = copy.deepcopy(data)
    if "eval" in out:
        out["eval"] = _resolve_eval(out["eval"], root)
    for i, model in enumerate(_entries(out, "models")):
        if not isinstance(model, dict):
            continue
        where = f"models[{i}] ({model.get('name')!r})"
        if isinstance(model.get("spec"), str) and model["spec"]:
            model["spec"] = resolve_model_spec(model["spec"], root, where=where)
        if isinstance(model.get("embeddings"), str) and model["embeddings"]:
            model["embeddings"] = resolve_path(model["embeddings"], root)
        if "eval" in model:
            model["eval"] = _resolve_eval(model["eval"], root)
    for dataset in _entries(out, "datasets"):
        if not isinstance(dataset, dict):
            continue
        for key in ("manifest", "root", "data_dir"):
            if isinstance(dataset.get(key), str) and dataset[key]:
                dataset[key] = resolve_path(dataset[key], root)
        if "eval" in dataset:
            dataset["eval"] = _resolve_eval(dataset["eval"], root)
    return out


def exported_path(template: str, dataset: str, split: str) -> Path:
    """The EmbeddingSet directory an ``embeddings`` template names for ``dataset`` and ``split``."""
    return Path(template.format(dataset=dataset, split=split))


def exported_present(template: str, dataset: str, split: str) -> bool:
    """Whether that directory holds an exported EmbeddingSet (a partial one fails at load, naming the file)."""
    return (exported_path(template, dataset, split) / EMBEDDINGS_META).is_file()


def missing_embeddings_message(model: str, dataset: str, split: str, template: str) -> str:
    """What a missing exported split is called in errors and in a skipped run's reason."""
    where = exported_path(template, dataset, split)
    return (f"model {model!r} × dataset {dataset!r}: no exported embeddings for split {split!r}: expected "
            f"{where / EMBEDDINGS_META} (template {template!r})")


#: files whose change makes a finished run stale: weights of a model directory, an exported EmbeddingSet
_SOURCE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".npy")


def source_fingerprint(path: str | os.PathLike[str]) -> str | None:
    """Size + mtime of a model's weight files or an EmbeddingSet's files (``None``: the path does not exist).

    Part of each run's fingerprint, so a retrained checkpoint or re-exported embeddings under the
    same path make the finished results stale (they are recomputed), and embeddings exported after
    a run was recorded as skipped are picked up by the rerun.
    """
    root = Path(path)
    if not root.exists():
        return None
    if root.is_file():
        files = [root]
    else:  # weights anywhere below (checkpoints/…), JSON at the top; not what `medvl evaluate` wrote inside (eval-*)
        files = sorted(f for f in root.rglob("*") if f.is_file()
                       and not f.relative_to(root).parts[0].startswith("eval-")
                       and (f.suffix in _SOURCE_SUFFIXES or (f.suffix == ".json" and f.parent == root)))
    tokens = []
    for file in files:
        info = file.stat()
        tokens.append(f"{file.relative_to(root) if file != root else file.name}:{info.st_size}:{info.st_mtime_ns}")
    return hash_object(tokens)[:16]


def exported_sources(template: str, dataset: str, split: str) -> dict[str, str | None]:
    """The exported splits the runs of (model, dataset) read, fingerprinted."""
    return {part: source_fingerprint(exported_path(template, dataset, part))
            for part in dict.fromkeys((split, "train", "val"))}


def needed_splits(tasks: list[str], split: str) -> list[str]:
    """The exported splits the runs of ``tasks`` cannot do without (the probe's val split is optional)."""
    return [split, *(["train"] if "probe" in tasks and split != "train" else [])]


def check_model_specs(models: list[ModelEntry]) -> None:
    """A model ``spec`` path (resolved) that does not exist is an error before anything runs."""
    for model in models:
        spec = model.spec
        if spec is not None and not Path(spec).exists() and not (looks_like_hub_id(spec) and not Path(spec).is_absolute()):
            raise UserInputError(f"model {model.name!r}: spec {spec} does not exist (relative paths in a benchmark "
                                 "YAML are read from its directory; on the command line, from the working directory)")
