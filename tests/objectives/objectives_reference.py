"""Independent, loop-based reference implementations of the objectives (float64, no shared code)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def clip_reference(image: Tensor, text: Tensor, scale: Tensor | float) -> Tensor:
    """Balancing Act Appendix D.1: L = −1/(2N) Σ_i [log softmax_j(s·cos(I_i,T_j))_i + log softmax_j(s·cos(T_i,I_j))_i]."""
    i, t = unit(image), unit(text)
    n = i.shape[0]
    total = image.new_zeros(())
    for a in range(n):
        row = torch.stack([scale * (i[a] @ t[b]) for b in range(n)])
        col = torch.stack([scale * (t[a] @ i[b]) for b in range(n)])
        total = total + (row[a] - torch.logsumexp(row, 0)) + (col[a] - torch.logsumexp(col, 0))
    return -total / (2 * n)


def siglip_reference(image: Tensor, text: Tensor, scale: Tensor | float, bias: Tensor | float) -> Tensor:
    """SigLIP (Zhai et al. 2023, Alg. 1): −1/N Σ_i Σ_j log σ(z_ij (s·cos(I_i,T_j) + b))."""
    i, t = unit(image), unit(text)
    n = i.shape[0]
    total = image.new_zeros(())
    for a in range(n):
        for b in range(n):
            z = 1.0 if a == b else -1.0
            logit = scale * (i[a] @ t[b]) + bias
            total = total + torch.log(torch.sigmoid(z * logit))
    return -total / n


def unicl_reference(image: Tensor, text: Tensor, scale: Tensor | float, positives: Tensor) -> Tensor:
    """DLILP Eqs. 3–4 with the mean over rows: positives[i, j] = image i and text j are positives."""
    i, t = unit(image), unit(text)
    n = i.shape[0]
    total = image.new_zeros(())
    for a in range(n):
        row = torch.stack([scale * (i[a] @ t[b]) for b in range(n)])
        pos = [b for b in range(n) if positives[a, b]]
        total = total + sum(row[b] - torch.logsumexp(row, 0) for b in pos) / len(pos)
        col = torch.stack([scale * (t[a] @ i[b]) for b in range(n)])
        pos_t = [b for b in range(n) if positives[b, a]]
        total = total + sum(col[b] - torch.logsumexp(col, 0) for b in pos_t) / len(pos_t)
    return -total / (2 * n)


def bce_elem(logit: Tensor, y: float) -> Tensor:
    p = torch.sigmoid(logit)
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p))


def masked_bce_reference(logits: Tensor, targets: Tensor, mask: Tensor, eps: float = 1e-3) -> Tensor:
    """jusiro/DLILP model.py (reference notes B.4): mean_b [Σ_c m ℓ / (Σ_c m + 1e-3)]."""
    b, c = logits.shape
    total = logits.new_zeros(())
    for r in range(b):
        num = logits.new_zeros(())
        count = 0
        for k in range(c):
            if mask[r, k]:
                num = num + bce_elem(logits[r, k], float(targets[r, k]))
                count += 1
        total = total + num / (count + eps)
    return total / b


def triplet_reference(a: Tensor, p: Tensor, n: Tensor, margin: float, eps: float = 1e-6) -> Tensor:
    """Balancing Act Appendix D.2 (without the stray λ): mean max(0, ‖a−p‖ − ‖a−n‖ + α), torch's eps."""
    losses = []
    for r in range(a.shape[0]):
        dp = torch.sqrt(((a[r] - p[r] + eps) ** 2).sum())
        dn = torch.sqrt(((a[r] - n[r] + eps) ** 2).sum())
        losses.append(torch.clamp(dp - dn + margin, min=0.0))
    return torch.stack(losses).mean()


def nt_xent_reference(z1: Tensor, z2: Tensor, tau: float) -> Tensor:
    """SimCLR (Chen et al. 2020) Eq. 1: ℓ(i,j) = −log exp(sim/τ) / Σ_{k≠i} exp(sim_ik/τ), mean over 2N."""
    z = unit(torch.cat([z1, z2]))
    n2 = z.shape[0]
    n = n2 // 2
    total = z.new_zeros(())
    for r in range(n2):
        partner = (r + n) % n2
        others = torch.stack([z[r] @ z[k] / tau for k in range(n2) if k != r])
        total = total - (z[r] @ z[partner] / tau - torch.logsumexp(others, 0))
    return total / n2


LN2 = math.log(2.0)
