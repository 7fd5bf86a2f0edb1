"""Grouped, stratified, seeded splits and group-leakage checks.

Everything works on *groups* (the ``group`` column: patient or study), so one group never
lands in two folds or splits. Labels are aggregated per group (counts of positive records
per class) and groups are assigned by iterative stratification (Sechidis, Tsoumakas &
Vlahavas, "On the stratification of multi-label data", ECML PKDD 2011, Algorithm 1), with
each group weighted by its number of records. Multiclass and ordinal labels are one-hot
counts; regression targets are stratified by quantile bins.

Results depend on the seed and on the set of records, not on their order in the file:
groups are visited in an order given by sorting group ids and applying a seeded permutation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medvl.data.manifest import Manifest, ManifestError
from medvl.utils.errors import InvalidArgumentError

__all__ = [
    "LeakageReport",
    "assign_splits",
    "find_group_leakage",
    "group_label_counts",
    "iterative_stratification",
    "label_distribution",
    "stratified_group_kfold",
]


# ----------------------------------------------------------------------------------------- labels per group


def _row_label_counts(manifest: Manifest, task: str | None, n_bins: int = 5) -> np.ndarray:
    """(N, L) non-negative per-record label indicators used for stratification."""
    n = len(manifest)
    if task is None:
        return np.zeros((n, 0), dtype=np.float64)
    spec = manifest.task(task)
    values = manifest.label_matrix(task)
    mask = manifest.label_mask(task)
    if spec.kind == "multilabel":
        return np.where(mask, values >= 0.5, False).astype(np.float64)
    if spec.kind == "regression":
        finite = mask & np.isfinite(values)
        out = np.zeros((n, n_bins), dtype=np.float64)
        if finite.any():
            edges = np.quantile(values[finite], np.linspace(0, 1, n_bins + 1)[1:-1])
            bins = np.searchsorted(edges, values[finite], side="right")
            out[np.flatnonzero(finite), bins] = 1.0
        return out
    out = np.zeros((n, spec.num_classes), dtype=np.float64)
    rows = np.flatnonzero(mask)
    out[rows, values[rows]] = 1.0
    return out


def group_label_counts(
    manifest: Manifest, task: str | None = None, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate records into groups.

    Returns:
        group_ids: (G,) sorted unique group ids (object array of str);
        row_group: (N_rows,) index into ``group_ids`` of each selected row;
        sizes: (G,) records per group;
        counts: (G, L) positive records per label (see module docstring).
    """
    selected = np.arange(len(manifest)) if rows is None else np.asarray(rows, dtype=np.int64)
    groups = manifest.records["group"].astype(str).to_numpy(dtype=object)[selected]
    group_ids, row_group = np.unique(groups.astype(str), return_inverse=True)
    per_row = _row_label_counts(manifest, task)[selected]
    g = len(group_ids)
    sizes = np.bincount(row_group, minlength=g).astype(np.float64)
    counts = np.zeros((g, per_row.shape[1]), dtype=np.float64)
    np.add.at(counts, row_group, per_row)
    return group_ids.astype(object), row_group, sizes, counts


# ----------------------------------------------------------------------------------------- algorithm


def iterative_stratification(
    counts: np.ndarray,
    proportions: Sequence[float],
    *,
    sizes: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Assign items (groups) to subsets with the given proportions, balancing every label.

    Sechidis et al. (2011), Algorithm 1, generalised to weighted items: the desired number of
    records per subset is ``proportions * sizes.sum()`` and per (subset, label)
    ``proportions * counts[:, label].sum()``. Repeatedly take the label with the fewest
    remaining positives; give each unassigned item having it to the subset that most wants
    that label (ties: the subset that wants the most records, then seeded random). Items
    without positives go to the subset that wants the most records.

    Args:
        counts: (G, L) non-negative label counts per item.
        proportions: (K,) subset fractions (normalised to sum to 1).
        sizes: (G,) item weights (records per group); default 1.
        seed: seeds the visiting order and tie breaks.

    Returns:
        (G,) int64 subset index per item.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2:
        raise ValueError(f"counts must be (G, L), got shape {counts.shape}")
    g, n_labels = counts.shape
    props = np.asarray(proportions, dtype=np.float64)
    if props.ndim != 1 or len(props) == 0 or (props < 0).any() or props.sum() <= 0:
        raise ValueError(f"proportions must be non-negative with a positive sum, got {list(proportions)}")
    props = props / props.sum()
    weights = np.ones(g) if sizes is None else np.asarray(sizes, dtype=np.float64)
    if weights.shape != (g,):
        raise ValueError(f"sizes must have shape ({g},), got {weights.shape}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(g)  # canonical visiting order: items arrive sorted by id
    tie_draws: list[float] = np.asarray(rng.random(g), dtype=np.float64).tolist()  # seeded tie breaks
    k_range = list(range(len(props)))
    # plain Python lists: the greedy loop touches K values and the item's nonzero labels only
    desired_total: list[float] = [float(p) * float(weights.sum()) for p in props]
    desired_label = (props[:, None] * counts.sum(axis=0)[None, :]).tolist()
    item_rows, item_cols = np.nonzero(counts)
    indptr = np.searchsorted(item_rows, np.arange(g + 1)).tolist()
    cols = item_cols.tolist()
    vals = counts[item_rows, item_cols].tolist()
    weight_list = weights.tolist()
    assignment = np.full(g, -1, dtype=np.int64)
    positive = counts > 0

    def place(item: int, label: int | None) -> None:
        if label is None:
            candidates = k_range
        else:
            want = [desired_label[j][label] for j in k_range]
            best = max(want)
            candidates = [j for j in k_range if want[j] == best]
        if len(candidates) > 1:
            best_total = max(desired_total[j] for j in candidates)
            candidates = [j for j in candidates if desired_total[j] == best_total]
        j = candidates[0] if len(candidates) == 1 else candidates[int(tie_draws[item] * len(candidates))]
        assignment[item] = j
        row = desired_label[j]
        for p in range(indptr[item], indptr[item + 1]):
            row[cols[p]] -= vals[p]
        desired_total[j] -= weight_list[item]

    remaining = np.ones(g, dtype=bool)
    while n_labels and (positive & remaining[:, None]).any():
        left = np.where(remaining[:, None], counts, 0.0).sum(axis=0)
        left[left <= 0] = np.inf
        label = int(np.argmin(left))
        items = order[remaining[order] & positive[order, label]]
        for item in items.tolist():
            place(item, label)
        remaining[items] = False
    for item in order[remaining[order]].tolist():
        place(item, None)
    return assignment


# ----------------------------------------------------------------------------------------- folds and splits


def stratified_group_kfold(
    manifest: Manifest,
    n_folds: int,
    *,
    task: str | None = None,
    seed: int = 0,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Fold index (0..n_folds-1) for each record; -1 for records outside ``rows``.

    Groups never cross folds; label counts per fold follow iterative stratification on ``task``
    (or only group sizes when ``task`` is None).
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    selected = np.arange(len(manifest)) if rows is None else np.asarray(rows, dtype=np.int64)
    _, row_group, sizes, counts = group_label_counts(manifest, task, selected)
    if len(sizes) < n_folds:
        raise ManifestError(f"cannot make {n_folds} folds from {len(sizes)} group(s)")
    group_fold = iterative_stratification(counts, [1.0] * n_folds, sizes=sizes, seed=seed)
    out = np.full(len(manifest), -1, dtype=np.int64)
    out[selected] = group_fold[row_group]
    return out


def assign_splits(
    manifest: Manifest,
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    n_folds: int = 5,
    task: str | None = None,
    seed: int = 0,
    keep_existing_test: bool = False,
) -> Manifest:
    """A copy of ``manifest`` with ``split`` and ``fold`` assigned, grouped and stratified.

    1. test: ``test_fraction`` of the records (whole groups) → ``split = "test"``, ``fold = -1``.
       With ``keep_existing_test`` the records already in ``test`` stay there (with every
       other record of their groups) and no new test records are drawn.
    2. val: ``val_fraction`` of all records from the rest → ``split = "val"``, ``fold = -1``.
    3. the rest → ``split = "train"``; with ``n_folds >= 2`` they get folds 0..n_folds-1.

    Fractions are of records (groups weighted by size). Stratification uses ``task``.
    """
    if not 0 <= test_fraction < 1 or not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise InvalidArgumentError(
            f"need 0 <= test, val and test + val < 1; got test={test_fraction}, val={val_fraction}"
        )
    if n_folds == 1 or n_folds < 0:
        raise InvalidArgumentError(f"n_folds must be 0 (none) or >= 2, got {n_folds}")
    n = len(manifest)
    if n == 0:
        raise ManifestError("cannot split an empty manifest")
    group_ids, row_group, sizes, counts = group_label_counts(manifest, task)
    group_split = np.full(len(group_ids), "", dtype=object)
    seeds = np.random.SeedSequence(seed).generate_state(3)

    if keep_existing_test:
        existing = manifest.records["split"].fillna("").astype(str).to_numpy(dtype=object) == "test"
        test_groups = np.unique(row_group[existing])
        group_split[test_groups] = "test"
    elif test_fraction > 0:
        part = iterative_stratification(counts, [test_fraction, 1 - test_fraction], sizes=sizes, seed=int(seeds[0]))
        group_split[part == 0] = "test"
    rest = np.flatnonzero(group_split == "")
    if val_fraction > 0 and len(rest):
        share = val_fraction / max(1e-12, sizes[rest].sum() / sizes.sum())
        share = min(share, 1.0)
        part = iterative_stratification(counts[rest], [share, 1 - share], sizes=sizes[rest], seed=int(seeds[1]))
        group_split[rest[part == 0]] = "val"
    group_split[group_split == ""] = "train"
    group_fold = np.full(len(group_ids), -1, dtype=np.int64)
    train_groups = np.flatnonzero(group_split == "train")
    if n_folds >= 2:
        if len(train_groups) < n_folds:
            raise ManifestError(f"cannot make {n_folds} folds from {len(train_groups)} training group(s)")
        group_fold[train_groups] = iterative_stratification(
            counts[train_groups], [1.0] * n_folds, sizes=sizes[train_groups], seed=int(seeds[2])
        )
    out = manifest.copy()
    out.records["split"] = pd.Series(group_split[row_group], dtype="str")
    out.records["fold"] = group_fold[row_group]
    return out


def label_distribution(manifest: Manifest, task: str, by: str = "fold") -> pd.DataFrame:
    """Positive records per class (rows: values of ``by``; columns: classes), plus ``n`` records."""
    spec = manifest.task(task)
    per_row = _row_label_counts(manifest, task)
    names = list(spec.classes) if spec.kind != "regression" else [f"q{i}" for i in range(per_row.shape[1])]
    frame = pd.DataFrame(per_row, columns=names)
    frame[by] = manifest.records[by].to_numpy()
    frame["n"] = 1
    return frame.groupby(by, sort=True).sum()


# ----------------------------------------------------------------------------------------- leakage


@dataclass
class LeakageReport:
    """Groups found in more than one split (train/val/test) or more than one fold."""

    n_groups: int
    split_leaks: list[dict[str, Any]] = field(default_factory=list)
    fold_leaks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no group crosses splits or folds."""
        return not self.split_leaks and not self.fold_leaks

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "n_groups": self.n_groups,
            "n_split_leaks": len(self.split_leaks),
            "n_fold_leaks": len(self.fold_leaks),
            "split_leaks": self.split_leaks,
            "fold_leaks": self.fold_leaks,
        }


def _group_bounds(sorted_codes: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) of each ``wanted`` code's run in ``sorted_codes``."""
    return np.searchsorted(sorted_codes, wanted, side="left"), np.searchsorted(sorted_codes, wanted, side="right")


def _leaks(groups: np.ndarray, values: np.ndarray, ids: np.ndarray, key: str, n_examples: int = 5
           ) -> list[dict[str, Any]]:
    """Groups with more than one distinct value: per-value record counts and the first record ids.

    Vectorised: (group, value) pairs are counted with one ``np.unique`` over integer codes and the
    first ``n_examples`` rows of each group are picked by a stable sort; Python only assembles the
    report entries of the leaking groups.
    """
    if len(groups) == 0:
        return []
    group_codes, group_names = pd.factorize(groups, sort=True)
    value_codes, value_names = pd.factorize(values, sort=True)
    width = max(len(value_names), 1)
    pairs, pair_counts = np.unique(group_codes.astype(np.int64) * width + value_codes, return_counts=True)
    pair_group, pair_value = pairs // width, pairs % width  # sorted by group, then value
    leaking = np.bincount(pair_group, minlength=len(group_names)) > 1
    if not leaking.any():
        return []
    bad = np.flatnonzero(leaking)
    keep = leaking[pair_group]
    pair_group, pair_value, pair_counts = pair_group[keep], pair_value[keep], pair_counts[keep]
    rows = np.flatnonzero(leaking[group_codes])  # manifest order
    rows = rows[np.argsort(group_codes[rows], kind="stable")]  # by group, manifest order within
    row_group = group_codes[rows]
    first = np.searchsorted(row_group, row_group, side="left")
    examples = rows[np.arange(len(rows)) - first < n_examples]
    example_group = group_codes[examples]
    p_lo, p_hi = _group_bounds(pair_group, bad)
    e_lo, e_hi = _group_bounds(example_group, bad)
    value_text = np.asarray([str(v) for v in value_names], dtype=object)[pair_value].tolist()
    counts = pair_counts.tolist()
    example_ids = ids[examples].tolist()
    names = group_names[bad].tolist()
    return [
        {"group": str(name), key: dict(zip(value_text[a:b], counts[a:b], strict=True)), "example_ids": example_ids[c:d]}
        for name, a, b, c, d in zip(names, p_lo.tolist(), p_hi.tolist(), e_lo.tolist(), e_hi.tolist(), strict=True)
    ]


def find_group_leakage(manifest: Manifest) -> LeakageReport:
    """Find every group that appears in two or more splits, or two or more folds (vectorised).

    Records with an empty split or fold -1 are not counted as being in a split / fold. Groups are
    reported in sorted order with their record count per split (fold) and up to five record ids.
    """
    records = manifest.records
    groups = records["group"].astype(str).to_numpy(dtype=object)
    split = records["split"].fillna("").astype(str).to_numpy(dtype=object)
    fold = pd.to_numeric(records["fold"], errors="coerce").fillna(-1).to_numpy(dtype=np.int64)
    ids = records["id"].astype(str).to_numpy(dtype=object)
    report = LeakageReport(n_groups=int(pd.unique(groups).size))
    in_split = split != ""
    report.split_leaks = _leaks(groups[in_split], split[in_split], ids[in_split], "splits")
    in_fold = fold >= 0
    report.fold_leaks = _leaks(groups[in_fold], fold[in_fold], ids[in_fold], "folds")
    return report
