"""Few-shot linear probes: K shots per class × seeds, L2 strength searched (CLIP) or fixed (DLILP).

Protocol (recorded in every result under ``options``):

* **Features**: ``image_features`` (backbone, pre-projection) or ``image_emb`` (projected),
  optionally L2-normalised (``features`` / ``normalize`` options).
* **Shots**: for each seed, ``rng = numpy.random.default_rng(seed)``; for each class in class-index
  order, the training pool's samples of that class are permuted with ``rng`` and the first K are
  taken. A class with fewer than K training samples is an error naming the class. ``"all"`` uses
  the whole training pool.
* **Classifier**: multinomial logistic regression (binary tasks: one logit + sigmoid), with
  intercept, minimising ``C·Σ_i w_i·CE_i + ½‖W‖²`` (scikit-learn's ``LogisticRegression``
  objective; the intercept is not penalised), solved full-batch with L-BFGS in torch. Every
  (seed, C) problem of one K is solved in one batched L-BFGS run. ``class_balance=True`` gives
  ``w_i = n / (n_classes_present · n_{y_i})`` (scikit-learn's ``class_weight="balanced"``).
* **C selection** (``c_mode="search"``, the CLIP protocol): every C of ``c_grid`` (then
  ``refine_points`` log-spaced values between the best C's grid neighbours) is fitted on the shots
  and scored on a validation set: the ``val`` split when given, otherwise a class-stratified
  ``val_fraction`` of the training pool held out *before* the shots are drawn (disjoint from them).
  The score is accuracy (balanced accuracy when ``class_balance``); ties go to the smaller C
  (stronger regularisation). ``c_mode="fixed"`` uses ``c_fixed`` (DLILP: 0.316 with class
  balancing) and no validation set.
* **Test metrics**: :func:`medvl.evaluation.classification.evaluate_classification` on the test
  split, per seed, aggregated over seeds (mean ± std, median (Q1–Q3)).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medvl.evaluation.aggregate import summarize_values
from medvl.evaluation.classification import evaluate_classification, labelled_rows
from medvl.evaluation.embeddings import EmbeddingSet, EmbeddingSetError, TaskInfo, l2_normalize

#: 10^-4 … 10^4, one value per decade (refined around the best by ``refine_points``).
DEFAULT_C_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)

__all__ = [
    "DEFAULT_C_GRID",
    "LogisticFit",
    "evaluate_probe",
    "fit_logistic_batched",
    "probe_features",
    "sample_shots",
]


@dataclass
class LogisticFit:
    """Weights of S×G logistic models: ``weight`` (S, G, d, C_out), ``bias`` (S, G, C_out)."""

    weight: torch.Tensor
    bias: torch.Tensor
    n_iter: torch.Tensor  # (S, G) iterations used
    converged: torch.Tensor  # (S, G) bool

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(S, G, n, C_out) logits for features ``x`` (n, d) or (S, n, d)."""
        if x.ndim == 2:
            return torch.einsum("nd,sgdc->sgnc", x, self.weight) + self.bias[:, :, None, :]
        return torch.einsum("snd,sgdc->sgnc", x, self.weight) + self.bias[:, :, None, :]


def _data_loss(logits: torch.Tensor, y1h: torch.Tensor, sw_n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean cross-entropy (S, G) and its gradient w.r.t. the logits (S, G, n, C_out).

    ``y1h`` (S, n, C_out) one-hot targets (binary: (S, n, 1) 0/1), ``sw_n`` (S, n) = w_i / n.
    """
    if logits.shape[-1] == 1:
        z = logits[..., 0]
        t = y1h[:, None, :, 0]
        ce = torch.nn.functional.softplus(z) - z * t
        resid = (torch.sigmoid(z) - t)[..., None]
    else:
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        ce = (lse[..., 0] - (logits * y1h[:, None]).sum(-1))
        resid = torch.exp(logits - lse) - y1h[:, None]
    w = sw_n[:, None, :]
    return (ce * w).sum(-1), resid * w[..., None]


@contextmanager
def _cpu_threads_for(work: int, device: torch.device) -> Iterator[None]:
    """Run small CPU problems single-threaded: intra-op threads only add overhead on tiny tensors."""
    if device.type != "cpu" or work > 2_000_000:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_logistic_batched(
    x: torch.Tensor,
    y: torch.Tensor,
    c_values: Sequence[float] | np.ndarray | torch.Tensor,
    num_classes: int,
    *,
    sample_weight: torch.Tensor | None = None,
    n_samples: torch.Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-4,
    ftol: float | None = None,
    history: int = 5,
    dtype: torch.dtype = torch.float64,
) -> LogisticFit:
    """Fit S×G L2-regularised logistic regressions with one batched L-BFGS.

    ``x`` (S, n, d) features of S training sets, ``y`` (S, n) int64 labels in ``[0, num_classes)``,
    ``c_values`` the G inverse regularisation strengths (scikit-learn's C), shared (G,) or per set
    (S, G). Sets of different sizes are padded: padded rows get ``sample_weight`` 0 and
    ``n_samples`` (S,) gives each set's real size (default n).
    Minimises, per problem, ``mean_i(w_i·CE_i) + ‖W‖² / (2·C·n)`` (the scikit-learn objective
    divided by C·n, as scikit-learn's own L-BFGS path does). A problem stops when its max-abs
    gradient is below ``tol`` (scikit-learn's ``tol`` for lbfgs), when an iteration decreases the
    objective by less than ``ftol`` relative (default ``64·eps``, scikit-learn's choice), or when
    a line search can no longer decrease it. Computed in ``dtype`` (float64 by default, like
    scikit-learn; float32 is faster on GPUs and stops earlier because of its ``ftol``). ``history``
    L-BFGS pairs are kept (5: on these small problems the two-loop recursion's memory traffic costs
    more than the few iterations a longer memory saves; scikit-learn/scipy keep 10). Gradients are analytic; line searches reuse ``X·direction`` (logits are linear
    in the step), so each iteration costs two matrix products for all S×G problems together.
    """
    if x.ndim != 3 or y.shape != x.shape[:2]:
        raise ValueError(f"x must be (S, n, d) and y (S, n); got {tuple(x.shape)} and {tuple(y.shape)}")
    n_grid = int(np.asarray(c_values).shape[-1])
    with _cpu_threads_for(x.numel() * n_grid * max(num_classes - 1, 1), x.device):
        return _fit_logistic(x, y, c_values, num_classes, sample_weight, n_samples, max_iter, tol, ftol, history, dtype)


def _fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    c_values: Sequence[float] | np.ndarray | torch.Tensor,
    num_classes: int,
    sample_weight: torch.Tensor | None,
    n_samples: torch.Tensor | None,
    max_iter: int,
    tol: float,
    ftol: float | None,
    history: int,
    dtype: torch.dtype,
) -> LogisticFit:
    s, n, d = x.shape
    c_out = 1 if num_classes == 2 else num_classes
    device = x.device
    x = x.to(dtype)
    ftol = 64 * torch.finfo(dtype).eps if ftol is None else ftol
    cs = torch.as_tensor(np.asarray(c_values, dtype=np.float64), dtype=dtype, device=device)
    if (cs <= 0).any():
        raise ValueError("every C must be > 0")
    if cs.ndim == 1:
        cs = cs[None, :].expand(s, -1)
    g = cs.shape[1]
    n_s = torch.full((s,), float(n), dtype=dtype, device=device) if n_samples is None else n_samples.to(dtype)
    l2 = 1.0 / (cs * n_s[:, None])  # (S, G)
    sw = torch.ones((s, n), dtype=dtype, device=device) if sample_weight is None else sample_weight.to(dtype)
    sw_n = sw / n_s[:, None]
    y1h = y.to(dtype)[..., None] if c_out == 1 else torch.nn.functional.one_hot(y.long(), c_out).to(dtype)
    m = d * c_out + c_out
    x_t = x.transpose(1, 2).contiguous()  # (S, d, n): the gradient's product reads it row-wise

    def split(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return v[..., : d * c_out].reshape(s, g, d, c_out), v[..., d * c_out :]

    def project(v: torch.Tensor, cols: torch.Tensor | None) -> torch.Tensor:
        """X·v (S, G, n, C_out) for a parameter-shaped v; only grid columns ``cols`` (others 0)."""
        vw, vb = split(v)
        if cols is None:
            return torch.einsum("snd,sgdc->sgnc", x, vw) + vb[:, :, None, :]
        out = torch.zeros((s, g, n, c_out), dtype=dtype, device=device)
        out[:, cols] = torch.einsum("snd,sgdc->sgnc", x, vw[:, cols]) + vb[:, cols, None, :]
        return out

    def objective(
        logits: torch.Tensor,
        theta: torch.Tensor,
        known: tuple[torch.Tensor, torch.Tensor] | None = None,
        cols: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective (S, G) and gradient (S, G, m); the data gradient only in grid columns ``cols``."""
        data, resid = _data_loss(logits, y1h, sw_n) if known is None else known
        w, _ = split(theta)
        f = data + l2 * (w * w).sum((-1, -2)) / 2
        # Xᵀ·resid for all G problems of a set in one (d × n)·(n × G·C_out) product
        if cols is None:
            xr = torch.bmm(x_t, resid.permute(0, 2, 1, 3).reshape(s, n, g * c_out))
            gw = xr.reshape(s, d, g, c_out).permute(0, 2, 1, 3) + l2[..., None, None] * w
        else:
            k = len(cols)
            xr = torch.bmm(x_t, resid[:, cols].permute(0, 2, 1, 3).reshape(s, n, k * c_out))
            gw = l2[..., None, None] * w
            gw[:, cols] += xr.reshape(s, d, k, c_out).permute(0, 2, 1, 3)
        gb = resid.sum(2)
        return f, torch.cat([gw.reshape(s, g, -1), gb], dim=-1)

    theta = torch.zeros((s, g, m), dtype=dtype, device=device)
    logits = torch.zeros((s, g, n, c_out), dtype=dtype, device=device)
    f, grad = objective(logits, theta)
    s_hist = torch.zeros((history, s, g, m), dtype=dtype, device=device)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros((history, s, g), dtype=dtype, device=device)
    n_stored = torch.zeros((s, g), dtype=torch.int64, device=device)  # history slots since the last reset
    gamma = torch.ones((s, g), dtype=dtype, device=device)  # initial Hessian scale s·y / y·y
    active = grad.abs().amax(-1) > tol
    n_iter = torch.zeros((s, g), dtype=torch.int64, device=device)
    slot = 0
    for it in range(max_iter):
        if not bool(active.any()):
            break
        # two-loop recursion over each problem's newest n_stored pairs
        q = grad.clone()
        alphas = []
        for j in range(min(it, history)):
            k = (slot - 1 - j) % history
            valid = (n_stored > j).to(dtype)
            a = rho[k] * (s_hist[k] * q).sum(-1) * valid
            q -= a[..., None] * y_hist[k]
            alphas.append((k, a, valid))
        q *= torch.where(n_stored > 0, gamma, torch.ones_like(gamma))[..., None]
        for k, a, valid in reversed(alphas):
            b = rho[k] * (y_hist[k] * q).sum(-1) * valid
            q += (a - b)[..., None] * s_hist[k]
        direction = -q
        gd = (grad * direction).sum(-1)
        bad = gd >= 0  # not a descent direction: restart from steepest descent
        if bool(bad.any()):
            direction = torch.where(bad[..., None], -grad, direction)
            gd = torch.where(bad, -(grad * grad).sum(-1), gd)
            n_stored = torch.where(bad, torch.zeros_like(n_stored), n_stored)
        step = torch.where(
            n_stored == 0,
            torch.clamp(1.0 / grad.abs().sum(-1).clamp_min(1e-12), max=1.0),
            torch.ones((s, g), dtype=dtype, device=device),
        )
        # backtracking Armijo line search; logits are linear in the step
        # once some grid columns have converged in every set, the products skip them
        col_active = active.any(0)
        n_cols = int(col_active.sum())
        cols = None if n_cols > 0.75 * g else torch.nonzero(col_active)[:, 0]
        x_dir = project(direction, cols)
        w0, _ = split(theta)
        wd, _ = split(direction)
        ww, w_wd, wdwd = (w0 * w0).sum((-1, -2)), (w0 * wd).sum((-1, -2)), (wd * wd).sum((-1, -2))
        searching = active.clone()
        accepted = torch.zeros((s, g), dtype=dtype, device=device)
        # the accepted trial's logits, data loss and residuals are kept: the new gradient reuses them
        for trial in range(40):
            t4 = step[..., None, None]
            trial_logits = logits + t4 * x_dir
            data, resid = _data_loss(trial_logits, y1h, sw_n)
            f_c = data + l2 * (ww + 2 * step * w_wd + step * step * wdwd) / 2
            ok = searching & (f_c <= f + 1e-4 * step * gd)
            if trial == 0:
                acc_logits, acc_data, acc_resid = trial_logits, data, resid
            else:
                ok4 = ok[..., None, None]
                acc_logits = torch.where(ok4, trial_logits, acc_logits)
                acc_data = torch.where(ok, data, acc_data)
                acc_resid = torch.where(ok4, resid, acc_resid)
            accepted = torch.where(ok, step, accepted)
            searching = searching & ~ok
            if not bool(searching.any()):
                break
            # safeguarded quadratic interpolation of f along the direction: t ∈ [0.1·t, 0.5·t]
            curv = f_c - f - step * gd
            t_quad = -gd * step * step / (2 * curv.clamp_min(torch.finfo(dtype).tiny))
            t_new = torch.minimum(torch.maximum(t_quad, 0.1 * step), 0.5 * step)
            t_new = torch.where(torch.isfinite(t_new), t_new, 0.5 * step)
            step = torch.where(searching, t_new, step)
        moved = active & (accepted > 0)  # a failed search means no decrease is possible in this precision
        s_vec = accepted[..., None] * direction
        new_theta = theta + s_vec
        new_logits = acc_logits  # = logits + accepted·x_dir where a step was accepted
        new_f, new_grad = objective(new_logits, new_theta, (acc_data, acc_resid), cols)
        y_vec = new_grad - grad
        sy = (s_vec * y_vec).sum(-1)
        yy = (y_vec * y_vec).sum(-1)
        store = moved & (sy > torch.finfo(dtype).eps * yy) & (yy > 0)
        # a pair that fails the curvature test is stored as zeros (rho 0): the two-loop recursion
        # then ignores it, and every problem's newest n_stored slots stay aligned
        s_hist[slot] = torch.where(store[..., None], s_vec, torch.zeros_like(s_vec))
        y_hist[slot] = torch.where(store[..., None], y_vec, torch.zeros_like(y_vec))
        rho[slot] = torch.where(store, 1.0 / sy.clamp_min(1e-300 if dtype == torch.float64 else 1e-30), torch.zeros_like(sy))
        gamma = torch.where(store, sy / yy.clamp_min(1e-300 if dtype == torch.float64 else 1e-30), gamma)
        n_stored = torch.where(moved, n_stored + 1, torch.zeros_like(n_stored))
        slot = (slot + 1) % history
        f_prev = f
        theta = torch.where(moved[..., None], new_theta, theta)
        logits = torch.where(moved[..., None, None], new_logits, logits)
        f = torch.where(moved, new_f, f)
        grad = torch.where(moved[..., None], new_grad, grad)
        n_iter += moved.to(torch.int64)
        rel_decrease = (f_prev - f) / torch.maximum(torch.maximum(f_prev.abs(), f.abs()), torch.ones_like(f))
        active = moved & (grad.abs().amax(-1) > tol) & (rel_decrease > ftol)
    converged = ~active
    w, b = split(theta)
    return LogisticFit(weight=w, bias=b, n_iter=n_iter, converged=converged)


def probe_features(embeddings: EmbeddingSet, features: str = "backbone", normalize: bool = False) -> np.ndarray:
    """(N, d) float32 probe features: ``backbone`` (image_features) or ``projected`` (image_emb)."""
    if features == "backbone":
        if embeddings.image_features is None:
            raise EmbeddingSetError("probe features='backbone' needs image_features in the EmbeddingSet")
        x = embeddings.image_features
    elif features == "projected":
        x = embeddings.image_emb
    else:
        raise ValueError(f"features must be 'backbone' or 'projected', got {features!r}")
    return l2_normalize(x) if normalize else np.asarray(x, dtype=np.float32)


def _stratified_holdout(y: np.ndarray, fraction: float, rng: np.random.Generator, num_classes: int) -> np.ndarray:
    """Boolean mask of a class-stratified held-out subset (floor(fraction·n_c) per class, ≥1 if n_c ≥ 2)."""
    held = np.zeros(len(y), dtype=bool)
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        n_val = int(np.floor(fraction * len(idx)))
        if n_val == 0 and len(idx) >= 2 and fraction > 0:
            n_val = 1
        held[rng.permutation(idx)[:n_val]] = True
    return held


def sample_shots(
    y: np.ndarray, k: int | str, seed: int, num_classes: int, classes: Sequence[str] | None = None
) -> np.ndarray:
    """Indices of K samples per class (class-index order, seeded permutation); ``"all"`` = every index."""
    if k == "all":
        return np.arange(len(y))
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"shots must be a positive int or 'all', got {k!r}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        if len(idx) < k:
            name = classes[c] if classes is not None else str(c)
            raise EmbeddingSetError(f"{k}-shot probe: class {name!r} has only {len(idx)} training samples")
        chosen.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(chosen))


def _balanced_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(num_classes)
    w[present] = len(y) / (present.sum() * counts[present])
    return np.asarray(w[y])


def _score(y: np.ndarray, pred: np.ndarray, num_classes: int, balanced: bool) -> np.ndarray:
    """Accuracy or balanced accuracy of each row of ``pred`` (G, n)."""
    if not balanced:
        return np.asarray((pred == y[None, :]).mean(1))
    out = np.zeros(len(pred))
    present = [c for c in range(num_classes) if (y == c).any()]
    for c in present:
        out += (pred[:, y == c] == c).mean(1)
    return out / max(len(present), 1)


def _labels(emb: EmbeddingSet, task: str) -> tuple[np.ndarray, TaskInfo]:
    if task not in emb.labels:
        raise EmbeddingSetError(f"no labels for probe task {task!r} (have {sorted(emb.labels)})")
    info = emb.task(task)
    if info.kind not in ("multiclass", "ordinal"):
        raise EmbeddingSetError(f"linear probe supports multiclass/ordinal tasks; {task!r} is {info.kind}")
    y = np.asarray(emb.labels[task])
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        raise EmbeddingSetError(f"labels[{task!r}] has missing values; the probe needs every training label")
    return y.astype(np.int64), info


@dataclass
class _ProbeSet:
    """One (K, seed) training problem with its validation data and C grid."""

    key: str
    seed_index: int
    x: np.ndarray
    y: np.ndarray
    w: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    grid: list[float]
    identity: tuple[Any, ...] = ()  # equal identities = the same training and validation data
    weight: torch.Tensor | None = None  # (G, d, C_out) in the original feature space
    bias: torch.Tensor | None = None  # (G, C_out)
    converged: bool = True


def _solve_sets(
    sets: list[_ProbeSet],
    num_classes: int,
    device: str | torch.device,
    max_iter: int,
    tol: float,
    dtype: torch.dtype = torch.float64,
) -> None:
    """Fit every set's grid, batching sets of similar size into one L-BFGS run each.

    A set with fewer samples than feature dimensions is solved exactly in its samples' row space:
    with ``Xᵀ = QR`` the L2-regularised optimum is ``W = Q·A`` where ``A`` solves the same problem
    on features ``Rᵀ`` (n × n) — the penalty is unchanged because Q has orthonormal columns.
    Sets with the same non-empty ``identity`` and grid (e.g. K="all" for every seed with a fixed
    val split) are solved once.
    """
    first: dict[tuple[Any, ...], int] = {}
    duplicates: list[tuple[int, int]] = []
    unique: list[int] = []
    for i, st in enumerate(sets):
        key = (st.identity, tuple(st.grid))
        if st.identity and key in first:
            duplicates.append((i, first[key]))
        else:
            first[key] = i
            unique.append(i)
    order = sorted(unique, key=lambda i: len(sets[i].y))
    buckets: list[list[int]] = []
    def size(i: int) -> int:  # solved dimension: n × min(n, d)
        n = len(sets[i].y)
        return n * min(n, sets[i].x.shape[1])

    # new bucket when padding would cost > 4× (buckets ~ one shot count each): padding multiplies the
    # memory traffic of every L-BFGS vector operation, which dominates these small problems
    for i in order:
        if buckets and (size(i) <= 4 * max(size(buckets[-1][0]), 1) or size(i) <= 256):
            buckets[-1].append(i)
        else:
            buckets.append([i])
    for bucket in buckets:
        bases, feats = [], []
        for i in bucket:
            x = torch.from_numpy(np.asarray(sets[i].x)).to(device=device, dtype=dtype)
            if x.shape[0] < x.shape[1]:
                q, r = torch.linalg.qr(x.t(), mode="reduced")  # x = rᵀ qᵀ
                bases.append(q)
                feats.append(r.t())
            else:
                bases.append(None)
                feats.append(x)
        n_max = max(f.shape[0] for f in feats)
        d_max = max(f.shape[1] for f in feats)
        g_max = max(len(sets[i].grid) for i in bucket)
        xb = torch.zeros((len(bucket), n_max, d_max), dtype=dtype, device=device)
        yb = torch.zeros((len(bucket), n_max), dtype=torch.int64, device=device)
        wb = torch.zeros((len(bucket), n_max), dtype=dtype, device=device)
        cb = np.ones((len(bucket), g_max))
        for j, (i, f) in enumerate(zip(bucket, feats, strict=True)):
            n_j = f.shape[0]
            xb[j, :n_j, : f.shape[1]] = f
            yb[j, :n_j] = torch.from_numpy(sets[i].y)
            wb[j, :n_j] = torch.from_numpy(np.asarray(sets[i].w, dtype=np.float64))
            grid = sets[i].grid
            cb[j] = grid + [grid[-1]] * (g_max - len(grid))  # pad by repeating the last C
        n_real = torch.tensor([len(sets[i].y) for i in bucket], dtype=dtype, device=device)
        fit = fit_logistic_batched(
            xb, yb, cb, num_classes, sample_weight=wb, n_samples=n_real, max_iter=max_iter, tol=tol, dtype=dtype
        )
        for j, i in enumerate(bucket):
            g = len(sets[i].grid)
            a = fit.weight[j, :g, : feats[j].shape[1]]  # (G, r, C_out)
            q = bases[j]
            sets[i].weight = (a if q is None else torch.einsum("dr,grc->gdc", q, a)).float()
            sets[i].bias = fit.bias[j, :g].float()
            sets[i].converged = bool(fit.converged[j, :g].all())
    for i, src in duplicates:
        sets[i].weight, sets[i].bias, sets[i].converged = sets[src].weight, sets[src].bias, sets[src].converged


def _select(st: _ProbeSet, num_classes: int, balanced: bool, device: str | torch.device) -> int:
    """Index of the grid C with the best validation score (ties → smaller C; the grid is ascending)."""
    if len(st.y_val) == 0:
        raise EmbeddingSetError("C search needs a non-empty validation set (val split or val_fraction > 0)")
    assert st.weight is not None and st.bias is not None
    xv = torch.from_numpy(np.asarray(st.x_val, dtype=np.float32)).to(device)
    logits = torch.einsum("nd,gdc->gnc", xv, st.weight) + st.bias[:, None, :]
    pred = (logits[..., 0] > 0).long() if logits.shape[-1] == 1 else logits.argmax(-1)
    scores = _score(st.y_val, pred.cpu().numpy(), num_classes, balanced)
    return int(np.flatnonzero(scores == scores.max())[0])


def evaluate_probe(
    train: EmbeddingSet,
    test: EmbeddingSet,
    task: str,
    *,
    val: EmbeddingSet | None = None,
    shots: Sequence[int | str] = (1, 2, 4, 8, 16, "all"),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    features: str = "backbone",
    normalize: bool = False,
    c_mode: str = "search",
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    refine_points: int = 4,
    c_fixed: float = 0.316,
    val_fraction: float = 0.2,
    class_balance: bool = False,
    max_iter: int = 1000,
    tol: float = 1e-4,
    solver_dtype: str = "float64",
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Few-shot linear probe of ``task`` (see the module docstring for the protocol).

    Returns ``{"metrics": {"<K>shot/<metric>": mean over seeds}, "summaries": {same keys: mean, std,
    median, q1, q3, …}, "options": …, "info": {"per_seed": …, "chosen_c": …}}``.
    """
    if c_mode not in ("search", "fixed"):
        raise ValueError(f"c_mode must be 'search' or 'fixed', got {c_mode!r}")
    if not seeds:
        raise ValueError("at least one seed is needed")
    if solver_dtype not in ("float32", "float64"):
        raise ValueError(f"solver_dtype must be 'float32' or 'float64', got {solver_dtype!r}")
    dtype = torch.float64 if solver_dtype == "float64" else torch.float32
    if not shots:
        raise ValueError("at least one shot count is needed")
    train = train.subset(np.flatnonzero(labelled_rows(train, task)))
    test = test.subset(np.flatnonzero(labelled_rows(test, task)))
    if val is not None:
        val = val.subset(np.flatnonzero(labelled_rows(val, task)))
    y_pool, info = _labels(train, task)
    y_test, _ = _labels(test, task)
    n_cls = info.num_classes
    x_pool = probe_features(train, features, normalize)
    x_test = torch.from_numpy(probe_features(test, features, normalize)).to(device)
    empty_x = np.zeros((0, x_pool.shape[1]), np.float32)
    empty_y = np.zeros(0, np.int64)
    if c_mode == "search" and val is not None:
        y_val_split, _ = _labels(val, task)
        x_val_split = probe_features(val, features, normalize)
    grid = [float(c_fixed)] if c_mode == "fixed" else sorted(float(c) for c in c_grid)
    sets: list[_ProbeSet] = []
    for k in shots:
        for si, seed in enumerate(seeds):
            x_v, y_v = empty_x, empty_y
            pool_idx = np.arange(len(y_pool))
            if c_mode == "search":
                if val is None:
                    held = _stratified_holdout(y_pool, val_fraction, np.random.default_rng([seed, 1]), n_cls)
                    pool_idx = np.flatnonzero(~held)
                    x_v, y_v = x_pool[held], y_pool[held]
                else:
                    x_v, y_v = x_val_split, y_val_split
            shot_idx = pool_idx[sample_shots(y_pool[pool_idx], k, seed, n_cls, info.classes)]
            y_s = y_pool[shot_idx]
            w_s = _balanced_weights(y_s, n_cls) if class_balance else np.ones(len(shot_idx))
            identity = ("val_split" if c_mode == "search" and val is not None else ("fixed" if c_mode == "fixed" else None),
                        shot_idx.tobytes())
            sets.append(
                _ProbeSet(f"{k}shot", si, x_pool[shot_idx], y_s, w_s, x_v, y_v, list(grid),
                          identity=identity if identity[0] is not None else ())
            )
    _solve_sets(sets, n_cls, device, max_iter, tol, dtype)
    best = [0 if c_mode == "fixed" else _select(st, n_cls, class_balance, device) for st in sets]
    if c_mode == "search" and refine_points > 0 and len(grid) > 1:
        # one coarse-to-fine round per set around its best C (the CLIP search protocol)
        fine_sets = []
        for st, b in zip(sets, best, strict=True):
            lo, hi = np.log10(grid[max(b - 1, 0)]), np.log10(grid[min(b + 1, len(grid) - 1)])
            fine = sorted({float(v) for v in 10.0 ** np.linspace(lo, hi, refine_points + 2)} | {grid[b]})
            fine_sets.append(
                _ProbeSet(st.key, st.seed_index, st.x, st.y, st.w, st.x_val, st.y_val, fine, identity=st.identity)
            )
        _solve_sets(fine_sets, n_cls, device, max_iter, tol, dtype)
        sets = fine_sets
        best = [_select(st, n_cls, class_balance, device) for st in sets]
    per_seed: dict[str, list[dict[str, float]]] = {}
    chosen_c: dict[str, list[float]] = {}
    not_converged = 0
    for st, b in zip(sets, best, strict=True):
        assert st.weight is not None and st.bias is not None
        logits = x_test @ st.weight[b] + st.bias[b]
        res = evaluate_classification(logits.cpu().numpy(), y_test, info)
        per_seed.setdefault(st.key, []).append(dict(res["metrics"]))
        chosen_c.setdefault(st.key, []).append(st.grid[b])
        not_converged += int(not st.converged)
    metrics: dict[str, float] = {}
    summaries: dict[str, dict[str, float]] = {}
    for key, runs in per_seed.items():
        for name in runs[0]:
            summary = summarize_values([r[name] for r in runs])
            summaries[f"{key}/{name}"] = summary
            metrics[f"{key}/{name}"] = summary["mean"]
    options = {
        "task": task,
        "shots": [str(k) for k in shots],
        "seeds": list(seeds),
        "features": features,
        "normalize": normalize,
        "c_mode": c_mode,
        "c_grid": grid if c_mode == "search" else None,
        "refine_points": refine_points if c_mode == "search" else 0,
        "c_fixed": c_fixed if c_mode == "fixed" else None,
        "validation": None if c_mode == "fixed" else ("val split" if val is not None else f"{val_fraction} of train pool"),
        "selection_metric": "balanced_accuracy" if class_balance else "accuracy",
        "class_balance": class_balance,
        "solver": f"batched full-batch L-BFGS (torch {solver_dtype}), max_iter={max_iter}, tol={tol}",
        "objective": "C·Σ w_i·CE_i + ½‖W‖² (intercept unpenalised)",
    }
    return {
        "metrics": metrics,
        "summaries": summaries,
        "options": options,
        "info": {
            "per_seed": per_seed,
            "chosen_c": chosen_c,
            "n_train_pool": len(y_pool),
            "n_test": len(y_test),
            "fits_not_converged": not_converged,
        },
    }
