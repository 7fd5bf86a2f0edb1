"""Top-k selection with a fixed tie rule, shared by retrieval and the mutual k-NN metric.

``torch.topk`` leaves the order of equal values unspecified, so which of several tied items
ends up in a top-k set can depend on the platform, the thread count or the block shape. Every
top-k *set* in medvl follows one rule instead: **among equal scores the lower index ranks
first**, as a stable sort of ``-score`` would order them (``numpy.argsort(-s, kind="stable")``).
"""

from __future__ import annotations

import torch

__all__ = ["topk_lowest_index"]


def topk_lowest_index(scores: torch.Tensor, k: int, vals: torch.Tensor | None = None,
                      idx: torch.Tensor | None = None) -> torch.Tensor:
    """Column indices (rows, k) of each row's ``k`` largest scores, ties resolved by lower index.

    ``scores`` is (rows, n); ``vals``/``idx`` may be a precomputed ``torch.topk(scores, kmax)``
    with ``kmax ≥ k`` (reused across several k). The returned indices are in ``topk``'s order
    except in rows whose boundary ties had to be re-resolved, where they are ascending; callers
    use them as sets.
    """
    if vals is None or idx is None:
        vals, idx = torch.topk(scores, k, dim=1, largest=True, sorted=True)
    vk = vals[:, k - 1 : k]
    n_eq_total = (scores == vk).sum(1)
    n_eq_inside = (vals[:, :k] == vk).sum(1)
    chosen = idx[:, :k].clone()
    # Only rows whose boundary tie group extends beyond the top-k are ambiguous (when every tied
    # item is inside, the set is unambiguous); recompute those exactly with a mask.
    tie_rows = torch.nonzero(n_eq_total > n_eq_inside).flatten()
    if len(tie_rows):
        sr = scores[tie_rows]
        v = vk[tie_rows]
        gt = sr > v
        eq = sr == v
        need = k - gt.sum(1, keepdim=True)
        sel = gt | (eq & (eq.cumsum(1) <= need))
        chosen[tie_rows] = torch.nonzero(sel)[:, 1].view(len(tie_rows), k)
    return chosen
