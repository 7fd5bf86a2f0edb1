"""SVCCA (Raghu et al. 2017), deterministic.

Steps, for paired ``x (n, dx)`` and ``y (n, dy)``:

1. centre each feature; with ``standardize`` (the SAS repo / platonic-rep variant) divide it by
   its std (ddof=1) + ``1e-8``;
2. SVD step: keep the top ``dims`` left singular vectors ``U_x (n, dims)``, ``U_y`` — computed
   exactly from the float64 eigen-decomposition of the ``d×d`` Gram ``ZᵀZ`` (no randomised SVD);
3. CCA step: the canonical correlations of ``U_x`` and ``U_y`` are the singular values of
   ``U_xᵀU_y`` (cosines of the principal angles between the two subspaces), computed exactly
   from the ``dx×dy`` cross-product ``Z_xᵀZ_y`` without forming ``U``;
4. SVCCA = mean canonical correlation.

The SAS repo instead uses an unseeded ``torch.svd_lowrank`` + scikit-learn's iterative CCA with
random jitter (nondeterministic at ~1e-4–1e-3); this exact form is what those approximate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medvl.evaluation.alignment.blocked import cross_moments
from medvl.evaluation.alignment.validation import AlignmentPreconditionError, check_paired

__all__ = ["DEFAULT_SVCCA_DIMS", "canonical_correlations", "svcca"]

#: The SAS repo's ``cca_dim``.
DEFAULT_SVCCA_DIMS: int = 10
_STD_EPS = 1e-8


def _top_subspace(gram: torch.Tensor, dims: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    evals, evecs = torch.linalg.eigh(gram)
    evals, evecs = torch.flip(evals, dims=(0,))[:dims], torch.flip(evecs, dims=(1,))[:, :dims]
    tol = max(float(evals[0]), 0.0) * 1e-12 * gram.shape[0]
    if not bool((evals > tol).all()):
        rank = int((evals > tol).sum())
        raise AlignmentPreconditionError(f"{name}: only {rank} non-degenerate directions, fewer than SVCCA dims = {dims}")
    return evecs, torch.sqrt(evals)


def canonical_correlations(
    x: Any, y: Any, *, dims: int = DEFAULT_SVCCA_DIMS, standardize: bool = True, memory_budget: int | None = None
) -> np.ndarray:
    """Canonical correlations (descending, ``(dims,)``) between the top-``dims`` SVD subspaces of ``x`` and ``y``."""
    tx, ty = check_paired(x, y, same_dim=False, min_n=2, names=("x", "y"))
    n = tx.shape[0]
    if dims < 1 or dims > min(n - 1, tx.shape[1], ty.shape[1]):
        raise AlignmentPreconditionError(
            f"SVCCA dims must be in [1, min(n−1, dx, dy)] = [1, {min(n - 1, tx.shape[1], ty.shape[1])}], got {dims}"
        )
    mom = cross_moments(tx, ty, want=("xx", "yy", "xy"), budget=memory_budget)
    assert mom.xx is not None and mom.yy is not None and mom.xy is not None
    xx, yy, xy = mom.xx, mom.yy, mom.xy
    if standardize:
        sx = torch.sqrt(torch.diagonal(xx) / (n - 1)) + _STD_EPS
        sy = torch.sqrt(torch.diagonal(yy) / (n - 1)) + _STD_EPS
        xx = xx / sx[:, None] / sx[None, :]
        yy = yy / sy[:, None] / sy[None, :]
        xy = xy / sx[:, None] / sy[None, :]
    vx, sing_x = _top_subspace(xx, dims, "x")
    vy, sing_y = _top_subspace(yy, dims, "y")
    # U_x = Z_x V_x / s_x  ⇒  U_xᵀ U_y = diag(1/s_x) V_xᵀ (Z_xᵀ Z_y) V_y diag(1/s_y)
    m = (vx.T @ xy @ vy) / sing_x[:, None] / sing_y[None, :]
    corr = torch.linalg.svdvals(m).clamp(0.0, 1.0)
    return corr.numpy()


def svcca(
    x: Any, y: Any, *, dims: int = DEFAULT_SVCCA_DIMS, standardize: bool = True, memory_budget: int | None = None
) -> float:
    """SVCCA similarity in [0, 1]: mean canonical correlation of the top-``dims`` SVD subspaces."""
    return float(canonical_correlations(x, y, dims=dims, standardize=standardize, memory_budget=memory_budget).mean())
