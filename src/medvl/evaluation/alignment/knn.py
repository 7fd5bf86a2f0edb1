"""Mutual k-nearest-neighbour alignment (Huh et al. 2024, platonic-rep ``mutual_knn``).

For each record ``i``, take its ``k`` nearest neighbours (excluding itself) among the images by
cosine similarity, and likewise among the texts; the score is ``mean_i |N_img(i) ∩ N_txt(i)| / k``.
The two sets may have different ``d``. Neighbours are found in row blocks under the memory
budget (``topk`` of each ``(rows, n)`` similarity block), so no ``(n, n)`` matrix is kept.

**Tie rule.** When several records are equally similar at the k-th place, the ones with the
lower index are the neighbours (a stable sort of ``−similarity``,
``numpy.argsort(-s, kind="stable")[:k]``; :mod:`medvl.evaluation.ranking`). platonic-rep's
``torch.argsort`` leaves this unspecified, so its score on tied data (duplicate images or
captions) can change with the platform; medvl's cannot.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from medvl.evaluation.alignment.blocked import iter_dot_blocks, row_slices
from medvl.evaluation.alignment.validation import AlignmentPreconditionError, check_paired, l2_normalize_rows
from medvl.evaluation.ranking import topk_lowest_index

__all__ = ["DEFAULT_KNN_K", "knn_indices", "mutual_knn"]

#: platonic-rep's default ``topk``.
DEFAULT_KNN_K: int = 10


def knn_indices(x: torch.Tensor, k: int, *, memory_budget: int | None = None) -> torch.Tensor:
    """Indices ``(n, k)`` of each row's ``k`` largest inner products with the other rows (self excluded).

    Ties at the k-th place go to the lower index (see the module docstring).
    """
    n = x.shape[0]
    out = torch.empty(n, k, dtype=torch.long)
    for sl, block in iter_dot_blocks(x, x, budget=memory_budget, n_buffers=2):
        idx = torch.arange(sl.stop - sl.start)
        block[idx, idx + sl.start] = -math.inf
        out[sl] = topk_lowest_index(block, k)
    return out


def mutual_knn(
    image: Any, text: Any, *, k: int = DEFAULT_KNN_K, normalize: bool = True, memory_budget: int | None = None
) -> float:
    """Mean fraction of shared ``k``-NN between the image and the text neighbourhoods, in [0, 1].

    ``normalize=True`` ranks by cosine similarity (platonic-rep L2-normalises first); otherwise by
    raw inner product. Requires ``1 ≤ k ≤ n − 1``.
    """
    x, y = check_paired(image, text, same_dim=False, min_n=2, names=("image", "text"))
    n = x.shape[0]
    if not (1 <= k <= n - 1):
        raise AlignmentPreconditionError(f"mutual k-NN needs 1 ≤ k ≤ n − 1 = {n - 1}, got k = {k}")
    if normalize:
        x, y = l2_normalize_rows(x, "image"), l2_normalize_rows(y, "text")
    nx = knn_indices(x, k, memory_budget=memory_budget)
    ny = knn_indices(y, k, memory_budget=memory_budget)
    shared = 0
    for sl in row_slices(n, max(1, 2**22 // (k * k))):
        shared += int((nx[sl, :, None] == ny[sl, None, :]).any(dim=2).sum())
    return shared / (n * k)
