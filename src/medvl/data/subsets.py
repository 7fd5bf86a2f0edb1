"""Class-balanced evaluation subsets (DLILP's MIMIC 5×200, balanced RSNA/SIIM/COVID/VinDr, NIH-LT).

:func:`balanced_subset` picks **exactly** ``per_class`` records of each listed class — per split
when ``per_class`` maps split names to counts — and writes them as a single-label multiclass
task over those classes, in the order given. Eligible records:

* multiclass / ordinal source task: the label is one of ``classes``;
* multilabel source task: **exactly one** of ``classes`` is positive and annotated (DLILP's and
  GLoRIA's rule for the 5×200 sets); with ``others_negative`` every other annotated class
  must be negative too (as the CheXpert 5×200 rule asks of the five competition classes).

Selection is a pure function of ``(seed, record id)``: eligible records are ranked by a seeded
hash of their id, so the subset does not depend on row order, and the same seed gives the same
records. ``one_per_group`` keeps the best-ranked record of each group (one image per patient)
before counting. A class with too few eligible records is an error naming the class, the split
and how many there are — never a silently smaller subset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from medvl.data.adapters.base import hash_unit
from medvl.data.manifest import Manifest, ManifestError, TaskSpec

__all__ = ["SubsetError", "balanced_subset", "parse_per_class"]


class SubsetError(ManifestError):
    """A balanced subset cannot be drawn as asked (unknown class, too few records); the message says which."""


def parse_per_class(text: str) -> int | dict[str, int]:
    """``"200"`` → 200; ``"train=350,test=60"`` → ``{"train": 350, "test": 60}``."""
    text = text.strip()
    if "=" not in text:
        try:
            return int(text)
        except ValueError:
            raise SubsetError(f"--per-class {text!r}: expected a count or split=count pairs") from None
    out: dict[str, int] = {}
    for part in text.split(","):
        split, _, count = part.partition("=")
        try:
            out[split.strip()] = int(count)
        except ValueError:
            raise SubsetError(f"--per-class {text!r}: {part!r} is not split=count") from None
    return out


def _eligible_class(manifest: Manifest, spec: TaskSpec, columns: list[int], others_negative: bool) -> np.ndarray:
    """Index into ``columns`` of each record's single class, -1 if the record is not eligible."""
    labels = manifest.label_matrix(spec.name)
    if spec.kind in ("multiclass", "ordinal"):
        lookup = np.full(spec.num_classes + 1, -1, dtype=np.int64)
        lookup[columns] = np.arange(len(columns))
        return np.where(labels >= 0, lookup[np.clip(labels, -1, spec.num_classes - 1)], -1)
    if spec.kind != "multilabel":
        raise SubsetError(f"task {spec.name!r} is {spec.kind}: balanced subsets need class labels")
    mask = manifest.label_mask(spec.name)
    chosen = (labels[:, columns] == 1) & mask[:, columns]
    annotated = mask[:, columns].all(axis=1)
    single = (chosen.sum(axis=1) == 1) & annotated
    if others_negative:
        rest = np.setdiff1d(np.arange(spec.num_classes), columns)
        single &= ~((labels[:, rest] == 1) & mask[:, rest]).any(axis=1)
    return np.where(single, chosen.argmax(axis=1), -1)


def balanced_subset(
    manifest: Manifest,
    task: str,
    classes: Sequence[str],
    per_class: int | Mapping[str, int],
    *,
    seed: int = 0,
    new_task: str | None = None,
    novel: Sequence[str] = (),
    one_per_group: bool = False,
    others_negative: bool = False,
) -> Manifest:
    """The balanced subset (see the module docstring) as a new manifest.

    The result keeps every column of the chosen records and adds ``labels.<new_task>``
    (default ``<task>_<len(classes)>x<n>``), a multiclass task over ``classes`` whose
    ``novel_classes`` are ``novel``. Records are ordered by split, class, then hash rank.
    """
    spec = manifest.task(task)
    unknown = [c for c in classes if c not in spec.classes]
    if unknown:
        raise SubsetError(f"task {task!r} has no class(es) {unknown}; classes: {list(spec.classes)}")
    if len(set(classes)) != len(classes) or not classes:
        raise SubsetError(f"classes must be a non-empty list without repeats, got {list(classes)}")
    bad_novel = sorted(set(novel) - set(classes))
    if bad_novel:
        raise SubsetError(f"novel class(es) {bad_novel} are not among the subset's classes {list(classes)}")
    counts = dict(per_class) if isinstance(per_class, Mapping) else {"": int(per_class)}
    if any(n < 1 for n in counts.values()):
        raise SubsetError(f"per-class counts must be >= 1, got {counts}")
    cls = _eligible_class(manifest, spec, [spec.classes.index(c) for c in classes], others_negative)
    records = manifest.records
    frame = pd.DataFrame({"row": np.arange(len(records)), "cls": cls, "split": records["split"].astype(str).to_numpy(),
                          "group": records["group"].astype(str).to_numpy(),
                          "rank": [hash_unit(str(i), seed) for i in records["id"]]})
    frame = frame.loc[frame["cls"] >= 0].sort_values(["rank", "row"], kind="stable")
    chosen: list[pd.DataFrame] = []
    labels: list[np.ndarray] = []
    for split, n in counts.items():
        pool = frame if split == "" else frame.loc[frame["split"] == split]
        if split and pool.empty and split not in set(records["split"]):
            raise SubsetError(f"no records in split {split!r}; splits: {sorted(set(records['split']))}")
        if one_per_group:
            pool = pool.drop_duplicates("group", keep="first")
        for index, name in enumerate(classes):
            part = pool.loc[pool["cls"] == index].head(n)
            if len(part) < n:
                where = f" in split {split!r}" if split else ""
                rule = " (one per group)" if one_per_group else ""
                raise SubsetError(f"class {name!r} of task {task!r} has {len(part)} eligible records{where}{rule}, "
                                  f"fewer than the {n} asked")
            chosen.append(part)
            labels.append(np.full(len(part), index, dtype=np.int64))
    rows = np.concatenate([p["row"].to_numpy() for p in chosen])
    if len(np.unique(rows)) != len(rows):  # only possible when the same split is listed twice
        raise SubsetError(f"per-class counts {counts} select some records twice")
    subset = manifest.subset(rows)
    sizes = "_".join(str(n) for n in counts.values())
    name = new_task or f"{task}_{len(classes)}x{sizes}"
    if name in subset.tasks and name != task:
        raise SubsetError(f"the manifest already has a task {name!r}; choose another --new-task")
    out = subset.records.copy()
    out[f"labels.{name}"] = np.concatenate(labels)
    tasks = dict(subset.tasks)
    tasks[name] = TaskSpec(name, "multiclass", tuple(classes), novel_classes=tuple(novel))
    return Manifest(out, tasks, subset.root)
