"""Dense reference formulas: the textbook ``(n, n)`` versions of the blocked metrics.

They materialise full Gram / distance / similarity matrices in float64 and exist to check the
blocked implementations (tests) and to time them against (``benchmarks/alignment.py``). Use the
functions of the other modules for real data: these need ``O(n²)`` memory.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "dense_cka",
    "dense_delta_cos",
    "dense_linear_cka_gram",
    "dense_mmd2_rbf",
    "dense_mutual_knn",
    "dense_rmg_sas_repo",
    "dense_rmg_schrodi",
    "dense_sas",
    "dense_uniformity",
    "rbf_gram",
]


def _t(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(torch.float64)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _sq_dists(x: torch.Tensor) -> torch.Tensor:
    sq = (x * x).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp(min=0)
    d.fill_diagonal_(0)
    return d


def rbf_gram(x: np.ndarray | torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """Kornblith's ``gram_rbf``: ``exp(−D² / (2 threshold² median(D²)))``, median over all ``n²`` entries."""
    d = _sq_dists(_t(x))
    return torch.exp(-d / (2 * threshold**2 * float(np.median(d.numpy()))))


def _center(g: torch.Tensor, unbiased: bool) -> torch.Tensor:
    n = g.shape[0]
    g = g.clone()
    if unbiased:
        g.fill_diagonal_(0)
        means = g.sum(0) / (n - 2)
        means = means - means.sum() / (2 * (n - 1))
        g = g - means[:, None] - means[None, :]
        g.fill_diagonal_(0)
        return g
    h = torch.eye(n, dtype=g.dtype) - 1.0 / n
    return h @ g @ h


def dense_cka(gx: torch.Tensor, gy: torch.Tensor, debiased: bool = False) -> float:
    """CKA of two ``(n, n)`` Gram matrices (biased centring or Székely–Rizzo U-centring)."""
    cx, cy = _center(gx, debiased), _center(gy, debiased)
    return float((cx * cy).sum() / (cx.norm() * cy.norm()))


def dense_linear_cka_gram(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, debiased: bool = False) -> float:
    """Linear CKA through ``(n, n)`` Gram matrices ``XXᵀ``, ``YYᵀ``."""
    tx, ty = _t(x), _t(y)
    return dense_cka(tx @ tx.T, ty @ ty.T, debiased)


def dense_sas(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, topq: float = 0.1,
              eps: float = 1e-8) -> float:
    """SAS(x→y) with full projections, line by line as the spec's pseudo-code (float64)."""
    a, b = _t(x), _t(y)
    a, b = a - a.mean(0), b - b.mean(0)
    n = a.shape[0]
    lam, v = torch.linalg.eigh(a.T @ a / n)
    lam, v = lam.flip(0), v.flip(1)
    pa, pb = a @ v, b @ v
    cov = (pa * pb).sum(0) / n
    var = pb.var(0, unbiased=False)
    rho = cov / torch.sqrt(lam * var + eps)
    keep = lam >= float(np.quantile(lam.numpy(), 1 - topq))
    return float(((lam[keep] * rho[keep].abs()).sum() / lam[keep].sum()).clamp(0, 1))


def dense_mmd2_rbf(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, sigma: float,
                   unbiased: bool = False) -> float:
    """MMD² with ``exp(−‖a−b‖²/(2σ²))`` from the three full kernel matrices."""
    tx, ty = _t(x), _t(y)
    n = tx.shape[0]
    g = 1.0 / (2 * sigma**2)
    kxx, kyy = torch.exp(-g * _sq_dists(tx)), torch.exp(-g * _sq_dists(ty))
    kxy = torch.exp(-g * torch.cdist(tx, ty) ** 2)
    if not unbiased:
        return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    off = ~torch.eye(n, dtype=torch.bool)
    h = kxx + kyy - kxy - kxy.T
    return float(h[off].sum() / (n * (n - 1)))


def dense_delta_cos(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Δcos from the full ``(n, n)`` cosine matrix (the SAS repo's ``cosine_gap``)."""
    s = _unit(_t(x)) @ _unit(_t(y)).T
    n = s.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    return float(s.diagonal().mean() - s[off].mean())


def dense_rmg_schrodi(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Schrodi et al.'s RMG from full similarity matrices."""
    a, b = _unit(_t(x)), _unit(_t(y))
    n = a.shape[0]
    m = 1 - ((a * b).sum(1).mean() + 1) / 2
    m = m if m > 0 else torch.tensor(1e-3, dtype=torch.float64)
    off = ~torch.eye(n, dtype=torch.bool)
    di = 1 - ((a @ a.T)[off].mean() + 1) / 2
    dt = 1 - ((b @ b.T)[off].mean() + 1) / 2
    return float(m / (m + (di + dt) / 2))


def dense_rmg_sas_repo(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """The SAS repo's RMG (strict lower triangles of the full similarity matrices; no dropping of cos == 1)."""
    a, b = _unit(_t(x)), _unit(_t(y))
    n = a.shape[0]
    m = (1 - (a * b).sum(1)).mean()
    low = torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-1)
    s_img = (a @ a.T)[low].sum()
    d_txt = (1 - b @ b.T)[low].sum()
    return float(m / ((s_img + d_txt) / (2 * n * (n - 1)) + m))


def dense_uniformity(x: np.ndarray | torch.Tensor, t: float = 2.0) -> float:
    """Wang & Isola: ``log mean exp(−t · pdist²)`` over ``i < j``."""
    return float(torch.pdist(_unit(_t(x))).pow(2).mul(-t).exp().mean().log())


def dense_mutual_knn(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, k: int = 10) -> float:
    """platonic-rep's mutual k-NN on cosine similarities with full matrices (ties: lower index first)."""
    def knn(z: torch.Tensor) -> torch.Tensor:
        s = _unit(z) @ _unit(z).T
        s.fill_diagonal_(-math.inf)
        return torch.argsort(s, dim=1, descending=True, stable=True)[:, :k]  # ties: lower index first

    a, b = knn(_t(x)), knn(_t(y))
    n = a.shape[0]
    shared = sum(len(set(a[i].tolist()) & set(b[i].tolist())) for i in range(n))
    return shared / (n * k)
