"""Negative texts drawn from the dataset: per record, K texts of records with a different label.

The Balancing Act trains its prostate model at batch size 1 with a triplet loss whose negative
is "a uniformly random report whose ISUP grade differs from the anchor's", drawn from the whole
training set on every access (reference notes A.3). An in-batch sampler cannot do that: a batch
of one slide has no other report. :class:`DatasetNegativeSampler` does it on the data side, so
every item carries its own negatives whatever the batch size.

Which records may serve as negatives of record ``i`` (the *admissible* set):

* never ``i`` itself, and with ``exclude_same_group`` no record of ``i``'s group (patient);
* the labels must differ, by task kind:

  - multiclass / ordinal: both records labelled (label ≥ 0) and ``y_j ≠ y_i``;
  - multilabel: the label vectors disagree on at least one class annotated in both records
    (``label_mask``; a class unannotated in either record says nothing);
  - regression: both finite and ``|y_j − y_i| > min_label_distance``.

Draws are uniform over the admissible set, ``k`` distinct records while the set has at least
``k``, otherwise every admissible record and the rest drawn again with replacement. The random
stream is seeded by ``(seed, epoch, index)`` alone, so draws do not depend on worker count,
batch order or other randomness, and reruns are identical. Records with an empty admissible
set (an unlabelled record, a dataset with one class) are listed by :attr:`missing`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["DatasetNegativeSampler"]

#: Fourth word of the per-item seed (the dataset uses another one for captions and augmentation).
_SEED_TAG = 0x6E6567
#: Random candidates tried before the admissible set is enumerated exactly.
_REJECTION_TRIES = 32


class DatasetNegativeSampler:
    """Draws ``k`` negative records per anchor record (see the module docstring).

    Args:
        labels: per-record labels of the task: (N,) int for multiclass/ordinal (−1 = unlabelled),
            (N, C) 0/1 for multilabel, (N,) float for regression (NaN = unlabelled).
        kind: ``multiclass``, ``ordinal``, ``multilabel`` or ``regression``.
        groups: (N,) group (patient) of each record; ``None`` = every record its own group.
        k: negatives per record.
        seed: with (epoch, index), seeds every draw.
        label_mask: multilabel only, (N, C) bool of annotated classes (``None`` = all annotated).
        exclude_same_group: never draw from the anchor's group.
        min_label_distance: regression only (see the module docstring).
        eligible: (N,) bool, records that may serve as negatives at all (e.g. those with a text);
            ``None`` = all.
    """

    def __init__(
        self,
        labels: np.ndarray,
        kind: str,
        groups: Sequence[str] | np.ndarray | None = None,
        *,
        k: int = 1,
        seed: int = 0,
        label_mask: np.ndarray | None = None,
        exclude_same_group: bool = True,
        min_label_distance: float = 0.0,
        eligible: np.ndarray | None = None,
    ) -> None:
        if kind not in ("multiclass", "ordinal", "multilabel", "regression"):
            raise ValueError(f"unknown task kind {kind!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        labels = np.asarray(labels)
        n = labels.shape[0]
        self.kind = kind
        self.k = int(k)
        self.seed = int(seed)
        self.min_label_distance = float(min_label_distance)
        self.n = n
        self._labelled: np.ndarray
        if kind == "multilabel":
            if labels.ndim != 2:
                raise ValueError(f"multilabel labels must be (N, C), got shape {labels.shape}")
            self._vectors = labels > 0.5
            mask = np.ones_like(self._vectors) if label_mask is None else np.asarray(label_mask, dtype=bool)
            if mask.shape != labels.shape:
                raise ValueError(f"label_mask shape {mask.shape} does not match labels {labels.shape}")
            self._mask = mask
            self._labelled = np.asarray(mask.any(axis=1), dtype=bool)
        elif kind == "regression":
            self._values = labels.astype(np.float64).reshape(n)
            self._labelled = np.isfinite(self._values)
        else:
            self._classes = labels.astype(np.int64).reshape(n)
            self._labelled = self._classes >= 0
        self._anchor_labelled = self._labelled.copy()
        if eligible is not None:
            eligible = np.asarray(eligible, dtype=bool).reshape(-1)
            if eligible.shape[0] != n:
                raise ValueError(f"eligible has {eligible.shape[0]} entries for {n} records")
            self._labelled = self._labelled & eligible  # candidates: labelled and eligible
        if groups is None or not exclude_same_group:
            self._group_codes = np.arange(n, dtype=np.int64)
        else:
            codes, _ = _factorize(np.asarray(groups, dtype=object))
            if codes.shape[0] != n:
                raise ValueError(f"{codes.shape[0]} groups for {n} records")
            self._group_codes = codes
        self.missing: np.ndarray = np.flatnonzero(self._admissible_counts() == 0)
        """Indices of records without any admissible negative."""

    # ------------------------------------------------------------------ admissibility
    def admissible_mask(self, index: int) -> np.ndarray:
        """(N,) bool: records that may be drawn as negatives of record ``index``."""
        if not self._anchor_labelled[index]:
            return np.zeros(self.n, dtype=bool)
        ok = self._labelled & (self._group_codes != self._group_codes[index])
        if self.kind == "multilabel":
            both = self._mask & self._mask[index]
            ok &= ((self._vectors != self._vectors[index]) & both).any(axis=1)
        elif self.kind == "regression":
            ok &= np.abs(self._values - self._values[index]) > self.min_label_distance
        else:
            ok &= self._classes != self._classes[index]
        ok[index] = False
        return ok

    def _admissible_one(self, anchor: int, candidate: int) -> bool:
        if candidate == anchor or not self._labelled[candidate] or not self._anchor_labelled[anchor]:
            return False
        if self._group_codes[candidate] == self._group_codes[anchor]:
            return False
        if self.kind == "multilabel":
            both = self._mask[candidate] & self._mask[anchor]
            return bool(((self._vectors[candidate] != self._vectors[anchor]) & both).any())
        if self.kind == "regression":
            return bool(abs(self._values[candidate] - self._values[anchor]) > self.min_label_distance)
        return bool(self._classes[candidate] != self._classes[anchor])

    def _admissible_counts(self) -> np.ndarray:
        """Per record: the number of admissible negatives (classes: exact; other kinds: 0 when
        there is none, otherwise a positive lower bound)."""
        if self.kind in ("multiclass", "ordinal"):
            candidate = self._labelled
            classes = np.where(self._anchor_labelled, self._classes, -1)
            n_candidates = int(candidate.sum())
            weights = candidate.astype(np.float64)
            _, cls_inv = np.unique(classes, return_inverse=True)
            cls_inv = cls_inv.reshape(-1)
            same_class = np.bincount(cls_inv, weights=weights)[cls_inv]
            same_group = np.bincount(self._group_codes, weights=weights)[self._group_codes]
            pair = self._group_codes * (int(cls_inv.max(initial=0)) + 1) + cls_inv
            _, pair_inv = np.unique(pair, return_inverse=True)
            pair_inv = pair_inv.reshape(-1)
            same_both = np.bincount(pair_inv, weights=weights)[pair_inv]
            counts = n_candidates - same_class - same_group + same_both
            return np.where(self._anchor_labelled, np.rint(counts), 0).astype(np.int64)
        out = np.zeros(self.n, dtype=np.int64)
        rng = np.random.default_rng(self.seed)
        for i in range(self.n):
            if not self._anchor_labelled[i]:
                continue
            tries = rng.integers(self.n, size=_REJECTION_TRIES)
            if any(self._admissible_one(i, int(j)) for j in tries):
                out[i] = 1
            else:
                out[i] = int(self.admissible_mask(i).sum())
        return out

    # ------------------------------------------------------------------ drawing
    def draw(self, index: int, epoch: int = 0) -> np.ndarray:
        """The ``k`` negative record indices (int64) of record ``index`` in ``epoch``; empty when
        the record has no admissible negative."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} records")
        rng = np.random.default_rng(
            np.random.SeedSequence([self.seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, index & 0xFFFFFFFF, _SEED_TAG])
        )
        chosen: list[int] = []
        # fast path: rejection sampling is uniform over the admissible set and, one acceptance at
        # a time without repeats, gives a uniform draw without replacement
        for _ in range(_REJECTION_TRIES * self.k):
            j = int(rng.integers(self.n))
            if j not in chosen and self._admissible_one(index, j):
                chosen.append(j)
                if len(chosen) == self.k:
                    return np.asarray(chosen, dtype=np.int64)
        pool = np.flatnonzero(self.admissible_mask(index))
        if pool.size == 0:
            return np.zeros(0, dtype=np.int64)
        rest = np.setdiff1d(pool, np.asarray(chosen, dtype=np.int64), assume_unique=True)
        need = self.k - len(chosen)
        if rest.size >= need:
            extra = rng.choice(rest, size=need, replace=False)
        else:  # fewer admissible records than k: all of them, then repeats
            extra = np.concatenate([rest, rng.choice(pool, size=need - rest.size, replace=True)])
        return np.concatenate([np.asarray(chosen, dtype=np.int64), extra.astype(np.int64)])


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of ``values`` (strings/objects) and the unique values."""
    uniques, codes = np.unique(values.astype(str), return_inverse=True)
    return codes.astype(np.int64).reshape(-1), uniques
