"""Zero-shot classification from prompt files, with base/novel subsets and DLILP's hybrid mode.

* **Prompt files** (``prompts/*.yaml``, built-in ones under ``medvl/resources/prompts``)::

      templates: ["{}", "a chest x-ray showing {}"]     # "{}" is replaced by each class name
      negative_templates: ["no {}"]                       # optional (multilabel positive/negative)
      classes:
        Cardiomegaly: [cardiomegaly, enlarged heart]      # names, each put into every template
        No Finding: {names: [...], prompts: ["normal chest x-ray"]}   # plus literal sentences

  A task's class is found by exact name, else by a case/space/underscore-insensitive match.
  A class missing from the file is an error (``fallback_to_class_name=True`` uses the class
  name itself, with ``_`` read as a space, as DLILP does for classes without a prompt entry).
  The prompts used for every class are written into the results.
* **Class embedding** = mean of the L2-normalised prompt embeddings, **re-normalised**. A
  zero-norm prompt, class or image embedding is an error naming the prompt, class or record
  (normalising it would silently score that class 0 against every image).
* **Scores** = ``logit_scale · cos(image, class)``; probabilities by softmax over classes
  (multiclass/ordinal) or sigmoid per class (multilabel). With negative templates, a multilabel
  class's score is the scaled difference ``s_pos − s_neg`` (= softmax over the pair).
* **Subsets**: ``all``, ``base`` and ``novel`` classes (from the task spec; base = not novel when
  only novel classes are listed). For multiclass/ordinal tasks a subset keeps the images whose
  label is in it and re-indexes the classes; for multilabel tasks it keeps the columns.
* **Modes**: ``text`` (prompts for every class); ``prototypes`` (the model's label-prototype head
  scores, ``EmbeddingSet.logits["prototypes/<task>"]``, for base classes only); ``hybrid``
  (DLILP: base subset from the prototypes, novel subset from the text prompts).
* **Class maps** (``class_maps/*.yaml``): when the evaluation task's classes are not the
  pretraining task's, each evaluation class is scored by the *mean of the mapped pretraining
  prototypes*, L2-normalised (DLILP: COVID = mean of the Lung Opacity and Consolidation
  prototypes), see :func:`mapped_prototype_scores`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvl.evaluation.classification import evaluate_classification, labelled_rows
from medvl.evaluation.embeddings import (
    EmbeddingSet,
    EmbeddingSetError,
    TaskInfo,
    check_nonzero_rows,
    l2_normalize,
)
from medvl.models.loading.medvl import PROTOTYPE_LOGITS_PREFIX
from medvl.utils.errors import UserInputError
from medvl.utils.resources import builtin_yaml_names, read_yaml_source

__all__ = [
    "PROTOTYPE_LOGITS_PREFIX",
    "ClassMap",
    "ClassPrompts",
    "PromptSet",
    "build_class_embeddings",
    "builtin_prompt_sets",
    "evaluate_zeroshot",
    "load_class_map",
    "load_prompts",
    "mapped_prototype_scores",
    "zeroshot_scores",
]

SUBSETS = ("all", "base", "novel")
MODES = ("text", "prototypes", "hybrid")


class PromptError(UserInputError, ValueError):
    """A prompt file is malformed or lacks a class; the message names the file and the class."""


@dataclass(frozen=True)
class ClassPrompts:
    names: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()


@dataclass
class PromptSet:
    """Templates and per-class names/prompts read from a YAML file."""

    name: str
    templates: list[str]
    classes: dict[str, ClassPrompts]
    negative_templates: list[str] = field(default_factory=list)
    source: str = "<memory>"
    #: picked automatically for a task whose classes it names (false: only when named in the config,
    #: as the per-dataset prompt files, whose generic class names would otherwise match other datasets)
    auto_select: bool = True

    def _entry(self, class_name: str, fallback_to_class_name: bool) -> ClassPrompts:
        if class_name in self.classes:
            return self.classes[class_name]
        key = _canonical(class_name)
        for name, entry in self.classes.items():
            if _canonical(name) == key:
                return entry
        if fallback_to_class_name:
            return ClassPrompts(names=(class_name.replace("_", " "),))
        raise PromptError(f"{self.source}: no prompts for class {class_name!r} (have: {sorted(self.classes)})")

    def prompts_for(self, class_name: str, *, negative: bool = False, fallback_to_class_name: bool = False) -> list[str]:
        """Every prompt of a class (template × name, then literal prompts), de-duplicated in order."""
        entry = self._entry(class_name, fallback_to_class_name)
        templates = self.negative_templates if negative else self.templates
        out = [t.replace("{}", n) for n in entry.names for t in templates]
        if not negative:
            out.extend(entry.prompts)
        seen: set[str] = set()
        return [p for p in out if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]


def _canonical(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def builtin_prompt_sets() -> list[str]:
    """Names of the prompt files shipped with medvl."""
    return builtin_yaml_names("prompts")


def load_prompts(source: str | os.PathLike[str]) -> PromptSet:
    """Read a prompt YAML file, or a built-in set by name (``synthetic_findings``, ``chexpert``)."""
    import yaml

    text, where = read_yaml_source(source, "prompts", what="prompt file", error=PromptError, existing_path=True)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PromptError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PromptError(f"{where}: top level must be a mapping")
    unknown = set(data) - {"name", "description", "templates", "negative_templates", "classes", "auto_select"}
    if unknown:
        raise PromptError(f"{where}: unknown keys {sorted(unknown)}")
    templates = data.get("templates") or ["{}"]
    negatives = data.get("negative_templates") or []
    for key, values in (("templates", templates), ("negative_templates", negatives)):
        if not isinstance(values, list) or not all(isinstance(t, str) and "{}" in t for t in values):
            raise PromptError(f"{where}: {key} must be a list of strings containing '{{}}'")
    raw = data.get("classes")
    if not isinstance(raw, dict) or not raw:
        raise PromptError(f"{where}: 'classes' must be a non-empty mapping of class name to names/prompts")
    classes: dict[str, ClassPrompts] = {}
    for name, entry in raw.items():
        if isinstance(entry, str):
            entry = [entry]
        if isinstance(entry, list):
            cp = ClassPrompts(names=tuple(str(e) for e in entry))
        elif isinstance(entry, dict):
            bad = set(entry) - {"names", "prompts"}
            if bad:
                raise PromptError(f"{where}: class {name!r}: unknown keys {sorted(bad)} (use names, prompts)")
            cp = ClassPrompts(tuple(str(e) for e in entry.get("names") or ()), tuple(str(e) for e in entry.get("prompts") or ()))
        else:
            raise PromptError(f"{where}: class {name!r} must be a list of names or a mapping")
        if not cp.names and not cp.prompts:
            raise PromptError(f"{where}: class {name!r} has no names and no prompts")
        if any(not s.strip() for s in (*cp.names, *cp.prompts)):
            raise PromptError(f"{where}: class {name!r} has an empty name or prompt")
        classes[str(name)] = cp
    return PromptSet(str(data.get("name") or Path(where).stem), list(templates), classes, list(negatives), where,
                     bool(data.get("auto_select", True)))


@dataclass(frozen=True)
class ClassMap:
    """Evaluation class → the pretraining prototype classes whose mean prototype scores it."""

    name: str
    source_task: str
    classes: dict[str, tuple[str, ...]]
    match_names: bool = True
    """An evaluation class not listed is mapped to the source class of the same (case/space-insensitive) name."""
    source_classes: tuple[str, ...] = ()
    """The prototype head's class names in its output order (needed when the data lack the source task)."""
    source: str = "<memory>"

    def sources_for(self, class_name: str, source_classes: Sequence[str]) -> tuple[str, ...]:
        """The source classes of ``class_name`` (error naming the class if it has none)."""
        if class_name in self.classes:
            chosen = self.classes[class_name]
        else:
            key = _canonical(class_name)
            listed = next((v for k, v in self.classes.items() if _canonical(k) == key), None)
            if listed is not None:
                chosen = listed
            elif self.match_names:
                chosen = tuple(c for c in source_classes if _canonical(c) == key)
            else:
                chosen = ()
        if not chosen:
            raise PromptError(f"{self.source}: evaluation class {class_name!r} maps to no prototype of "
                              f"{self.source_task!r} (classes: {list(source_classes)})")
        missing = [c for c in chosen if c not in source_classes]
        if missing:
            raise PromptError(f"{self.source}: class {class_name!r} maps to {missing}, not classes of "
                              f"{self.source_task!r} ({list(source_classes)})")
        return tuple(chosen)


def load_class_map(source: str | os.PathLike[str]) -> ClassMap:
    """Read a class-map YAML file, or a built-in one by name (``class_maps/<name>.yaml``)::

        source_task: chexpert          # the model's prototype task
        source_classes: [No Finding, …] # its class order (else taken from the data's task spec)
        classes:
          COVID: [Lung Opacity, Consolidation]
          Normal: No Finding
        match_names: true              # unlisted classes: the prototype of the same name
    """
    import yaml

    text, where = read_yaml_source(source, "class_maps", what="class map", error=PromptError)
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("source_task"), str) or not isinstance(data.get("classes"), dict):
        raise PromptError(f"{where}: needs 'source_task' (a task name) and 'classes' (a mapping)")
    unknown = set(data) - {"name", "description", "source_task", "source_classes", "classes", "match_names"}
    if unknown:
        raise PromptError(f"{where}: unknown keys {sorted(unknown)}")
    classes = {str(k): tuple([v] if isinstance(v, str) else [str(x) for x in v or []]) for k, v in data["classes"].items()}
    empty = [k for k, v in classes.items() if not v]
    if empty:
        raise PromptError(f"{where}: class(es) {empty} map to no source class")
    return ClassMap(str(data.get("name") or Path(where).stem), data["source_task"], classes,
                    bool(data.get("match_names", True)), tuple(str(c) for c in data.get("source_classes") or ()), where)


def mapped_prototype_scores(
    scores: np.ndarray,
    source_classes: Sequence[str],
    target_classes: Sequence[str],
    class_map: ClassMap,
    gram: np.ndarray | None,
) -> tuple[np.ndarray, dict[str, list[str]]]:
    """(N, C_target) scores of mean prototypes from (N, C_source) prototype scores.

    ``scores[:, c] = s · cos(x, P_c)`` (the prototype head's logits, raw prototypes ``P``);
    ``gram = P Pᵀ`` (C_source, C_source). The score of a target class mapped to the set ``S`` is
    ``s · cos(x, Σ_{c∈S} P_c)`` = ``Σ_c ‖P_c‖ scores[:, c] / ‖Σ_c P_c‖`` — exactly the cosine with
    the L2-normalised mean of the raw prototypes (DLILP's ``select_class_prototypes``), which is
    *not* the mean of the per-class scores when the prototypes differ. A one-class mapping
    returns that class's scores unchanged.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape[1] != len(source_classes):
        raise ValueError(f"scores have {scores.shape[1]} columns for {len(source_classes)} source classes")
    index = {c: i for i, c in enumerate(source_classes)}
    out = np.zeros((scores.shape[0], len(target_classes)), dtype=np.float64)
    used: dict[str, list[str]] = {}
    for j, cls in enumerate(target_classes):
        chosen = class_map.sources_for(cls, source_classes)
        cols = [index[c] for c in chosen]
        used[cls] = [f"prototype:{c}" for c in chosen]
        if len(cols) == 1:
            out[:, j] = scores[:, cols[0]]
            continue
        if gram is None:
            raise PromptError(f"{class_map.source}: class {cls!r} averages {len(cols)} prototypes, which needs the "
                              "prototype vectors (a medvl model with its prototype head, not bare embeddings)")
        sub = np.asarray(gram, dtype=np.float64)[np.ix_(cols, cols)]
        norms = np.sqrt(np.diag(sub))
        out[:, j] = scores[:, cols] @ norms / np.sqrt(sub.sum())
    return out, used


def build_class_embeddings(
    prompts: PromptSet,
    classes: Sequence[str],
    encode_text: Callable[[list[str]], np.ndarray],
    *,
    negative: bool = False,
    fallback_to_class_name: bool = False,
) -> tuple[np.ndarray, dict[str, list[str]]]:
    """(C, D) class embeddings (mean of normalised prompt embeddings, re-normalised) and the prompts used.

    ``encode_text(list_of_prompts) -> (n, D)`` is called once with every prompt of every class.
    """
    per_class = {c: prompts.prompts_for(c, negative=negative, fallback_to_class_name=fallback_to_class_name) for c in classes}
    flat = [p for c in classes for p in per_class[c]]
    raw = np.asarray(encode_text(flat), dtype=np.float32)
    if raw.shape[0] != len(flat):
        raise ValueError(f"encode_text returned {raw.shape[0]} rows for {len(flat)} prompts")
    owner = [c for c in classes for _ in per_class[c]]
    check_nonzero_rows(raw, "zero-shot prompt embeddings", lambda i: f"class {owner[i]}: {flat[i]}")
    emb = l2_normalize(raw)
    out = np.zeros((len(classes), emb.shape[1]), dtype=np.float32)
    start = 0
    for i, c in enumerate(classes):
        n = len(per_class[c])
        out[i] = emb[start : start + n].mean(0)
        start += n
    check_nonzero_rows(out, "zero-shot class embeddings (mean of the prompts cancels out)", list(classes))
    return l2_normalize(out), per_class


def zeroshot_scores(
    image_emb: np.ndarray, class_emb: np.ndarray, logit_scale: float, negative_emb: np.ndarray | None = None
) -> np.ndarray:
    """(N, C) ``scale·cos(image, class)`` (minus the negative prompt's score when given).

    Zero-norm rows (images, classes or negatives) are an error naming the row index.
    """
    for arr, what in ((image_emb, "image_emb"), (class_emb, "class_emb"), (negative_emb, "negative_emb")):
        if arr is not None:
            check_nonzero_rows(arr, f"zero-shot: {what}")
    img = l2_normalize(image_emb)
    scores = logit_scale * img @ l2_normalize(class_emb).T
    if negative_emb is not None:
        scores = scores - logit_scale * img @ l2_normalize(negative_emb).T
    return np.asarray(scores, dtype=np.float64)


def _subset_indices(task: TaskInfo, subset: str) -> list[int]:
    if subset == "all":
        return list(range(task.num_classes))
    novel = set(task.novel_classes)
    if subset == "novel":
        return [i for i, c in enumerate(task.classes) if c in novel]
    base = set(task.base_classes) if task.base_classes else {c for c in task.classes if c not in novel}
    return [i for i, c in enumerate(task.classes) if c in base]


def _restrict(
    scores: np.ndarray, labels: np.ndarray, mask: np.ndarray | None, task: TaskInfo, cols: list[int], subset: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, TaskInfo]:
    sub_task = TaskInfo(f"{task.name}[{subset}]", task.kind, tuple(task.classes[i] for i in cols))
    if task.kind == "multilabel":
        return scores[:, cols], labels[:, cols], None if mask is None else mask[:, cols], sub_task
    y = np.asarray(labels).astype(np.int64)
    keep = np.isin(y, cols)
    remap = np.full(task.num_classes, -1, dtype=np.int64)
    remap[cols] = np.arange(len(cols))
    return scores[keep][:, cols], remap[y[keep]], None, sub_task


def evaluate_zeroshot(
    embeddings: EmbeddingSet,
    task: str,
    *,
    class_emb: np.ndarray | None = None,
    negative_emb: np.ndarray | None = None,
    prompts_used: Mapping[str, list[str]] | None = None,
    mode: str = "text",
    subsets: Sequence[str] = ("all", "base", "novel"),
    logit_scale: float = 100.0,
    threshold: float = 0.5,
    balanced_accuracy_over: str = "present",
) -> dict[str, Any]:
    """Zero-shot metrics of ``task`` per class subset (see the module docstring).

    ``balanced_accuracy_over``: ACA over the ``"present"`` or ``"all"`` classes of each subset
    (:func:`medvl.evaluation.classification.balanced_accuracy`).

    ``class_emb`` (C, D) in the space of ``embeddings.image_emb`` is needed for ``text`` and
    ``hybrid``; prototype scores come from ``embeddings.logits["prototypes/<task>"]``.
    Metric names: ``<task>/<subset>/<metric>``.
    """
    if mode not in MODES:
        raise ValueError(f"zero-shot mode must be one of {MODES}, got {mode!r}")
    info_t = embeddings.task(task)
    if task not in embeddings.labels:
        raise EmbeddingSetError(f"no labels for zero-shot task {task!r}")
    if info_t.kind == "regression":
        raise EmbeddingSetError(f"zero-shot classification needs class names; {task!r} is a regression task")
    keep = labelled_rows(embeddings, task)
    labels = np.asarray(embeddings.labels[task])[keep]
    mask = embeddings.label_mask.get(task)
    mask = None if mask is None or mask.ndim == 1 else mask[keep]
    text_scores = proto_scores = None
    if mode in ("text", "hybrid"):
        if class_emb is None:
            raise ValueError(f"zero-shot mode {mode!r} needs class embeddings from prompts")
        if class_emb.shape != (info_t.num_classes, embeddings.dim):
            raise ValueError(f"class_emb must be ({info_t.num_classes}, {embeddings.dim}), got {class_emb.shape}")
        check_nonzero_rows(class_emb, f"zero-shot class embeddings of {task!r}", list(info_t.classes))
        if negative_emb is not None:
            check_nonzero_rows(negative_emb, f"zero-shot negative-prompt embeddings of {task!r}", list(info_t.classes))
        kept_ids = [i for i, k in zip(embeddings.image_ids, keep, strict=True) if k]
        check_nonzero_rows(embeddings.image_emb[keep], "zero-shot: image_emb", kept_ids)
        text_scores = zeroshot_scores(embeddings.image_emb[keep], class_emb, logit_scale, negative_emb)
    if mode in ("prototypes", "hybrid"):
        key = PROTOTYPE_LOGITS_PREFIX + task
        if key not in embeddings.logits:
            raise EmbeddingSetError(f"mode {mode!r} needs label-prototype scores {key!r} (the model has no prototype head for {task!r})")
        proto_scores = np.asarray(embeddings.logits[key], dtype=np.float64)[keep]
    metrics: dict[str, float] = {}
    info: dict[str, Any] = {"n_unlabelled": int((~keep).sum())}
    for subset in subsets:
        if subset not in SUBSETS:
            raise ValueError(f"unknown subset {subset!r}; choose from {SUBSETS}")
        cols = _subset_indices(info_t, subset)
        if not cols:
            info[f"{subset}/skipped"] = "no classes in this subset"
            continue
        use_proto = mode == "prototypes" or (mode == "hybrid" and subset == "base")
        if mode == "prototypes" and subset != "base" and set(cols) - set(_subset_indices(info_t, "base")):
            info[f"{subset}/skipped"] = "label prototypes exist only for base classes"
            continue
        if mode == "hybrid" and subset == "all":
            info["all/skipped"] = "hybrid mode scores base and novel classes with different heads; see base and novel"
            continue
        scores = proto_scores if use_proto else text_scores
        assert scores is not None
        s, y, m, sub_task = _restrict(scores, labels, mask, info_t, cols, subset)
        if len(y) == 0:
            info[f"{subset}/skipped"] = "no images with a label in this subset"
            continue
        res = evaluate_classification(s, y, sub_task, label_mask=m, threshold=threshold, prefix=f"{task}/{subset}/",
                                      balanced_accuracy_over=balanced_accuracy_over)
        metrics.update(res["metrics"])
        info[subset] = {"scorer": "prototypes" if use_proto else "text", "classes": list(sub_task.classes), **res["info"]}
    options = {
        "task": task,
        "mode": mode,
        "subsets": list(subsets),
        "logit_scale": logit_scale,
        "class_embedding": "mean of L2-normalised prompt embeddings, re-normalised",
        "probabilities": "sigmoid per class" if info_t.kind == "multilabel" else "softmax over classes",
        "negative_prompts": negative_emb is not None,
        "threshold": threshold,
        "prompts": dict(prompts_used or {}),
        "prompt_counts": {c: len(p) for c, p in (prompts_used or {}).items()},
    }
    return {"metrics": metrics, "options": options, "info": info}
