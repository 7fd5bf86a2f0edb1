"""Batched L2-regularised logistic regression: many (training set, C) problems in one L-BFGS run.

The solver behind the few-shot linear probe (:mod:`medvl.evaluation.probe`). It minimises, per
problem, scikit-learn's ``LogisticRegression`` objective divided by ``C·Σw`` (as scikit-learn's own
lbfgs path does)::

    Σ_i w_i·CE_i / Σ_i w_i + ‖W‖² / (2·C·Σ_i w_i)          (intercept not penalised)

with multinomial cross-entropy (``num_classes > 2``), one logit + sigmoid (binary), or one binary
problem per class (multilabel, scikit-learn's one-vs-rest). Each iteration does the L-BFGS
two-loop recursion for every problem at once, then a strong-Wolfe line search (the conditions
scipy's L-BFGS-B uses: sufficient decrease 1e-3, curvature 0.9; extrapolation when the slope is
still steep). Logits are linear in the step, so line-search trials cost no matrix product: an
iteration is two products (``X·d`` and ``Xᵀ·residual``) for all problems together.

What makes it fast without changing any problem:

* **Principal axes.** Each set's features are rotated onto the principal axes of its rows (an
  SVD); W = V·A with orthonormal V, so the penalty and the objective are unchanged and L-BFGS —
  invariant to rotations — takes the same path. A set with fewer rows than features shrinks to
  n coordinates (the optimum lies in the rows' span).
* **Diagonal preconditioning** in those axes: each weight and intercept is scaled by its inverse
  curvature at W = 0, which nearly diagonalises the problem, so unnormalised, correlated backbone
  features converge in tens of iterations instead of thousands. (The features are *not* centred:
  re-parametrising the intercept changes which point a tol-stopped solver reaches where the
  objective is flat — few shots, large C — and measurably lowered few-shot accuracy against
  scikit-learn's.)
* **Warm starts along the C path** (``warm_start=True``): a few spread-out C values from the cold
  start, then every other value from the solution at the next smaller C — scikit-learn's
  ``warm_start=True`` path, batched (:func:`path_waves`).
* Problems finished in every set leave the batch; the stopping tests are scikit-learn's (max-abs
  gradient in the original features ≤ ``tol``, relative decrease ≤ ``64·eps``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["LogisticFit", "fit_logistic_batched"]

#: Grid columns solved from the cold start by a warm-started path (the rest start from a neighbour).
_COLD_COLUMNS = 8

#: Multiply-adds of one batched matrix product below which a CPU solve runs single-threaded. Every
#: iteration is ~100 small tensor operations besides its two products; below this size intra-op
#: threads cost more than they save (measured: a 15-set × 23-row few-shot bucket ran 20× slower on 2
#: threads than on 1 on a busy 2-core machine, where each thread barrier waits for a descheduled core).
_THREADED_WORK = 50_000_000

#: Strong-Wolfe constants of scipy's L-BFGS-B line search (dcsrch: ftol, gtol).
_WOLFE_DECREASE = 1e-3
_WOLFE_CURVATURE = 0.9
_MAX_TRIALS = 30


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

    ``y1h`` (S, Gy, n, C_out) one-hot targets (binary: 0/1 in one column), ``sw_n`` (S, Gy, n) the
    sample weights divided by their sum; ``Gy`` is 1 (targets shared by every problem of a set) or
    G (one target column per problem: the multilabel probe's per-class problems).
    """
    if logits.shape[-1] == 1:
        z = logits[..., 0]
        t = y1h[..., 0]
        ce = torch.nn.functional.softplus(z) - z * t
        resid = (torch.sigmoid(z) - t)[..., None]
    else:
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        ce = lse[..., 0] - (logits * y1h).sum(-1)
        resid = torch.exp(logits - lse) - y1h
    return (ce * sw_n).sum(-1), resid * sw_n[..., None]


@contextmanager
def _cpu_threads_for(work: int, device: torch.device) -> Iterator[None]:
    """Run small CPU problems single-threaded (``work``: multiply-adds of one of their matrix products)."""
    if device.type != "cpu" or work > _THREADED_WORK:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def path_waves(n_grid: int, cold: int = _COLD_COLUMNS) -> list[tuple[list[int], list[int]]]:
    """The order in which a warm-started solve visits an ascending grid of ``n_grid`` C values.

    Returns waves ``(columns, sources)``, each one batched run: wave 0 takes every ``stride``-th
    column (``stride = ceil(n_grid / cold)``) from the cold start (source -1); wave j takes the
    columns ``j, j + stride, …``, each starting from the solution at the next smaller C (source
    ``column − 1``), as scikit-learn's ``warm_start=True`` refits do. Starting from a neighbour's
    solution rather than interpolating between two keeps the tol-stopped solutions where the
    objective is flat comparable to scikit-learn's.
    """
    stride = max(1, -(-n_grid // cold))
    waves = []
    for j in range(min(stride, n_grid)):
        cols = list(range(j, n_grid, stride))
        waves.append((cols, [-1 if j == 0 else c - 1 for c in cols]))
    return waves


def fit_logistic_batched(
    x: torch.Tensor,
    y: torch.Tensor,
    c_values: Sequence[float] | np.ndarray | torch.Tensor,
    num_classes: int,
    *,
    sample_weight: torch.Tensor | None = None,
    multilabel: bool = False,
    warm_start: bool = False,
    max_iter: int = 1000,
    tol: float = 1e-4,
    ftol: float | None = None,
    history: int = 5,
    dtype: torch.dtype = torch.float64,
    product_dtype: torch.dtype | None = None,
    progress: Callable[[int], None] | None = None,
) -> LogisticFit:
    """Fit S×G L2-regularised logistic regressions with one batched L-BFGS.

    ``x`` (S, n, d) features of S training sets; ``c_values`` the G inverse regularisation
    strengths (scikit-learn's C), shared (G,) or per set (S, G). Targets:

    * multiclass (``multilabel=False``): ``y`` (S, n) int64 in ``[0, num_classes)``; one
      multinomial model per (set, C) (binary: one logit + sigmoid), as ``LogisticRegression``;
    * multilabel: ``y`` (S, n, num_classes) float, 1 positive, 0 negative, NaN unannotated; one
      independent binary model per (set, C, class) fitted on that class's annotated rows —
      scikit-learn's one-vs-rest ``LogisticRegression`` — all solved in the same batched run, each
      with its own line search and stopping tests. ``weight`` is then (S, G, d, num_classes).

    ``sample_weight`` (S, n), or (S, n, L) per class when multilabel (0 for padding rows of sets
    shorter than n), scales each row's loss; the
    objective of a problem is scikit-learn's divided by ``C · Σ w`` (its lbfgs path does the same).
    A problem stops when its max-abs gradient is below ``tol`` (scikit-learn's ``tol`` for lbfgs),
    when an iteration decreases the objective by less than ``ftol`` relative (default ``64·eps``,
    scikit-learn's choice), or when the line search can no longer decrease it.

    ``warm_start=True`` solves an ascending grid along the C path, as ``LogisticRegression(
    warm_start=True)`` refitted over increasing C does: a few spread-out C values first from the
    cold start, then the columns between them in waves (:func:`path_waves`), every problem starting
    from the solution at the next smaller C. Each wave is one batched run. It
    needs far fewer iterations per problem than cold starts where the optimum moves smoothly
    with C. Grids must be sorted ascending for it.

    Computed in ``dtype`` (float64 by default, like scikit-learn). ``product_dtype`` (default
    ``dtype``) is the precision of the two matrix products per iteration: float32 products with
    float64 state make large problems ~3× faster on CPU while the objective, line search and
    stopping tests stay in float64. ``history`` L-BFGS pairs are kept (5: on these small problems
    the two-loop recursion's memory traffic costs more than the few iterations a longer memory
    saves; scipy keeps 10). ``progress`` is called with the number of (set, C) fits finished after
    each batched run (each wave of a warm-started path).
    """
    if x.ndim != 3:
        raise ValueError(f"x must be (S, n, d); got {tuple(x.shape)}")
    s, n, _ = x.shape
    expected = (s, n, num_classes) if multilabel else (s, n)
    if tuple(y.shape) != expected:
        raise ValueError(f"y must be {expected} for x {tuple(x.shape)}; got {tuple(y.shape)}")
    cs = torch.as_tensor(np.asarray(c_values, dtype=np.float64), dtype=dtype, device=x.device)
    if (cs <= 0).any() or not bool(torch.isfinite(cs).all()):
        raise ValueError("every C must be finite and > 0")
    if cs.ndim == 1:
        cs = cs[None, :].expand(s, -1)
    if warm_start and bool((cs[:, 1:] < cs[:, :-1]).any()):
        raise ValueError("warm_start needs every grid sorted in ascending C")
    sw = torch.ones((s, n), dtype=dtype, device=x.device) if sample_weight is None else sample_weight.to(dtype)
    if sw.shape not in ((s, n), (s, n, num_classes) if multilabel else (s, n)):
        raise ValueError(f"sample_weight must be (S, n){' or (S, n, L)' if multilabel else ''}; got {tuple(sw.shape)}")
    row_weight = sw if sw.ndim == 2 else sw.mean(-1)  # rows that count at all
    n_grid = cs.shape[1]
    target_of: torch.Tensor | None
    if multilabel:
        yf = y.to(dtype)
        annotated = torch.isfinite(yf)
        targets = torch.nan_to_num(yf, nan=0.0).permute(0, 2, 1)[..., None]  # (S, L, n, 1)
        per_class = sw[..., None].expand(s, n, num_classes) if sw.ndim == 2 else sw
        weights = (per_class * annotated).permute(0, 2, 1)  # (S, L, n)
        # problems are (C, class) pairs, class varying fastest: column g·L + l
        cs_problem = cs.repeat_interleave(num_classes, dim=1)
        target_of = torch.arange(n_grid * num_classes, device=x.device) % num_classes
        c_out = 1
    else:
        c_out = 1 if num_classes == 2 else num_classes
        targets = (y.to(dtype)[..., None] if c_out == 1
                   else torch.nn.functional.one_hot(y.long(), c_out).to(dtype))[:, None]  # (S, 1, n, C_out)
        weights = sw[:, None, :]
        cs_problem = cs
        target_of = None
    group = num_classes if multilabel else 1  # problems per grid column
    per_run = len(path_waves(n_grid)[0][0]) * group if warm_start else cs_problem.shape[1]  # problems per run
    with _cpu_threads_for(s * n * min(n, x.shape[2]) * per_run * c_out, x.device):
        x, basis = _principal_axes(x.to(dtype), row_weight)
        solver = _LBFGS(x, targets, weights, target_of, cs_problem, dtype, product_dtype, c_out, basis)
        if not warm_start:
            fit = solver.run(torch.arange(cs_problem.shape[1], device=x.device), None, max_iter, tol, ftol, history)
            if progress is not None:
                progress(s * n_grid)
        else:
            fit = _solve_path(solver, cs, group, max_iter, tol, ftol, history, progress)
    fit = LogisticFit(torch.einsum("sdr,sgrc->sgdc", basis, fit.weight), fit.bias, fit.n_iter, fit.converged)
    if multilabel:  # (S, G·L, d, 1) → (S, G, d, L)
        weight = fit.weight[..., 0].reshape(s, n_grid, num_classes, -1).transpose(2, 3)
        bias = fit.bias[..., 0].reshape(s, n_grid, num_classes)
        return LogisticFit(weight, bias, fit.n_iter.reshape(s, n_grid, num_classes),
                           fit.converged.reshape(s, n_grid, num_classes))
    return fit


def _principal_axes(x: torch.Tensor, sw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features in the principal axes of each set's rows: ``(F, V)`` with ``F = X·V`` (S, n, r).

    ``X·W = F·A`` with ``W = V·A`` and ``‖W‖ = ‖A‖`` (V has orthonormal columns): the same problems.
    Every iterate of a solver started at W = 0 stays in the rows' span, so r ≤ min(n, d)
    coordinates suffice (directions below ``max(n, d)·eps`` relative are dropped). Rows with zero
    weight (padding) are zeroed first.
    """
    xr = x * (sw > 0).to(x.dtype)[..., None]
    u, sv, vh = torch.linalg.svd(xr, full_matrices=False)  # (S, n, k), (S, k), (S, k, d)
    tol = sv[:, :1] * max(x.shape[1], x.shape[2]) * torch.finfo(x.dtype).eps
    rank = max(int((sv > tol).sum(1).max()) if sv.numel() else 0, 1)
    return u[..., :rank] * sv[:, None, :rank], vh[:, :rank].transpose(1, 2)


def _solve_path(solver: _LBFGS, cs: torch.Tensor, group: int, max_iter: int, tol: float, ftol: float | None,
                history: int, progress: Callable[[int], None] | None = None) -> LogisticFit:
    """Solve the grid wave by wave (:func:`path_waves`), warm-starting from the next smaller C."""
    s, n_grid = cs.shape
    device = cs.device
    theta = torch.zeros((s, n_grid * group, solver.m), dtype=solver.dtype, device=device)
    n_iter = torch.zeros((s, n_grid * group), dtype=torch.int64, device=device)
    converged = torch.zeros((s, n_grid * group), dtype=torch.bool, device=device)
    offsets = torch.arange(group, device=device)
    for cols, sources in path_waves(n_grid):
        problems = (torch.tensor(cols, device=device)[:, None] * group + offsets).reshape(-1)
        init = None
        if sources[0] >= 0:
            init = theta[:, (torch.tensor(sources, device=device)[:, None] * group + offsets).reshape(-1)]
        part = solver.run(problems, init, max_iter, tol, ftol, history)
        theta[:, problems] = torch.cat([part.weight.flatten(-2), part.bias], dim=-1)
        n_iter[:, problems], converged[:, problems] = part.n_iter, part.converged
        if progress is not None:
            progress(s * len(cols))
    solver.g = theta.shape[1]
    w, b = solver.split(theta)
    return LogisticFit(weight=w, bias=b, n_iter=n_iter, converged=converged)


class _LBFGS:
    """Constants of one batched solve; problems are indexed (S sets, P problems), parameters flattened (m,).

    A problem is one (set, C) pair — or (set, C, class) for the multilabel probe. ``run`` solves a
    subset of the problems (a wave of a warm-started path, or all of them).
    """

    def __init__(
        self,
        x: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor,
        target_of: torch.Tensor | None,
        cs: torch.Tensor,
        dtype: torch.dtype,
        product_dtype: torch.dtype | None,
        c_out: int,
        basis: torch.Tensor,
    ) -> None:
        s, n, d = x.shape
        self.basis = basis  # (S, d_original, d): original weights W = basis·A
        self.s, self.n, self.d = s, n, d
        self.c_out = c_out
        self.g = cs.shape[1]
        self.device = x.device
        self.dtype = dtype
        self.pdtype = dtype if product_dtype is None else product_dtype
        self.x = x.to(self.pdtype)
        self.x_t = self.x.transpose(1, 2).contiguous()  # (S, d, n): the gradient's product reads it row-wise
        self.m = d * c_out + c_out
        # targets (S, T, n, C_out) and weights (S, T, n) of T target columns; problem p uses column
        # target_of[p] (None: T = 1, shared by every problem)
        self.target_of = target_of
        sw_sum = weights.sum(-1)  # (S, T): scikit-learn's sw_sum
        self.targets = targets
        self.weights = weights / sw_sum.clamp_min(1e-300)[..., None]
        sw_sum_p = sw_sum if target_of is None else sw_sum[:, target_of]
        self.l2_all = 1.0 / (cs * sw_sum_p.clamp_min(1e-300))  # (S, P)
        # start at the intercept that is optimal for W = 0 (the weighted log class shares; the
        # binary case their log-odds)
        share = (self.weights[..., None] * targets).sum(2).clamp(1e-6, 1 - 1e-6)  # (S, T, C_out)
        self.bias0 = torch.log(share) if c_out > 1 else torch.log(share) - torch.log1p(-share)
        # Diagonal preconditioner: the inverse curvature of each weight and intercept at W = 0. In the
        # principal axes (_principal_axes) the features are uncorrelated, so this diagonal is close to
        # the whole Hessian's inverse there: unnormalised, correlated backbone features (e.g. a
        # LayerNorm output) no longer need thousands of iterations at large C, and the small-C
        # problems' flat intercept is rescaled.
        var = (share * (1 - share)).clamp_min(1e-3)  # softmax/sigmoid curvature at W = 0, (S, T, C_out)
        xsq = torch.einsum("stn,snd->std", self.weights, x.to(dtype) ** 2)  # (S, T, d) weighted mean squares
        feat_curv = xsq * var.mean(-1, keepdim=True)  # (S, T, d) data curvature per feature at W = 0
        if target_of is not None:
            feat_curv, var = feat_curv[:, target_of], var[:, target_of]
        else:
            var = var.expand(s, self.g, c_out)
            feat_curv = feat_curv.expand(s, self.g, d)
        inv_w = 1.0 / (self.l2_all[..., None] + feat_curv)  # (S, P, d)
        self.inv_diag_all = torch.cat([inv_w[..., None].expand(-1, -1, d, c_out).flatten(-2), 1.0 / var], dim=-1)

    def select(self, problems: torch.Tensor) -> None:
        """Make ``problems`` (indices into P) the working set of the per-problem constants."""
        self.g = len(problems)
        self.l2 = self.l2_all[:, problems]
        self.inv_diag = self.inv_diag_all[:, problems]
        if self.target_of is None:
            self.y1h, self.sw_n = self.targets, self.weights
            self.bias_start = self.bias0.expand(self.s, self.g, self.c_out)
        else:
            cols = self.target_of[problems]
            self.y1h, self.sw_n, self.bias_start = self.targets[:, cols], self.weights[:, cols], self.bias0[:, cols]

    def keep_columns(self, keep: torch.Tensor) -> None:
        """Drop the working problems not in ``keep`` from the per-problem constants."""
        self.g = len(keep)
        self.l2 = self.l2[:, keep]
        self.inv_diag = self.inv_diag[:, keep]
        if self.target_of is not None:
            self.y1h, self.sw_n = self.y1h[:, keep], self.sw_n[:, keep]

    # parameter vectors are (S, G, m): d·C_out weights then C_out biases
    def split(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return v[..., : self.d * self.c_out].reshape(self.s, self.g, self.d, self.c_out), v[..., self.d * self.c_out :]

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """X·v (S, G, n, C_out) for a parameter-shaped v (S, G, m)."""
        vw, vb = self.split(v)
        return torch.einsum("snd,sgdc->sgnc", self.x, vw.to(self.pdtype)).to(self.dtype) + vb[:, :, None, :]

    def gradient(self, theta: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
        """Objective gradient (S, G, m) from the weighted logit residuals (S, G, n, C_out)."""
        s, n, d, c_out, g = self.s, self.n, self.d, self.c_out, self.g
        w, _ = self.split(theta)
        # Xᵀ·resid for all problems of a set in one (d × n)·(n × G·C_out) product
        xr = torch.bmm(self.x_t, resid.permute(0, 2, 1, 3).reshape(s, n, g * c_out).to(self.pdtype))
        gw = xr.to(self.dtype).reshape(s, d, g, c_out).permute(0, 2, 1, 3) + self.l2[..., None, None] * w
        return torch.cat([gw.reshape(s, g, -1), resid.sum(2)], dim=-1)

    def gradient_below(self, grad: torch.Tensor, tol: float) -> torch.Tensor:
        """(S, G) whether the max-abs gradient *in the original features* is ≤ ``tol`` (scipy's pgtol).

        With ``W = V·A`` the original weight gradient is ``V·∂A``. The check in the principal axes is
        cheap and decides most problems; the original-space gradient is only formed for the problems
        it lets through.
        """
        below = grad.abs().amax(-1) <= tol
        cand = torch.nonzero(below, as_tuple=True)
        if len(cand[0]) == 0:
            return below
        g_a, g_b = self.split(grad)
        ga, gb = g_a[cand], g_b[cand]  # (k, r, C_out), (k, C_out)
        g_w = torch.einsum("kdr,krc->kdc", self.basis[cand[0]], ga)
        ok = torch.maximum(g_w.abs().amax((-1, -2)), gb.abs().amax(-1)) <= tol
        below = below.clone()
        below[cand] = ok
        return below

    def penalty(self, theta: torch.Tensor) -> torch.Tensor:
        w, _ = self.split(theta)
        return self.l2 * (w * w).sum((-1, -2)) / 2

    def run(self, problems: torch.Tensor, init: torch.Tensor | None, max_iter: int, tol: float, ftol: float | None,
            history: int) -> LogisticFit:
        """Solve ``problems`` from ``init`` (S, len(problems), m), or from the prior intercept with W = 0."""
        self.select(problems)
        s, g, m, dtype, device = self.s, self.g, self.m, self.dtype, self.device
        ftol = 64 * torch.finfo(dtype).eps if ftol is None else ftol
        tiny = 1e-300 if dtype == torch.float64 else 1e-30
        if init is None:
            theta = torch.zeros((s, g, m), dtype=dtype, device=device)
            theta[..., m - self.c_out :] = self.bias_start
            logits = self.bias_start[:, :, None, :].expand(s, g, self.n, self.c_out).clone()
            data, resid = _data_loss(logits, self.y1h, self.sw_n)
            f = data
        else:
            theta = init.to(dtype).clone()
            logits = self.project(theta)
            data, resid = _data_loss(logits, self.y1h, self.sw_n)
            f = data + self.penalty(theta)
        grad = self.gradient(theta, resid)
        s_hist = torch.zeros((history, s, g, m), dtype=dtype, device=device)
        y_hist = torch.zeros_like(s_hist)
        rho = torch.zeros((history, s, g), dtype=dtype, device=device)
        n_stored = torch.zeros((s, g), dtype=torch.int64, device=device)  # history slots since the last reset
        gamma = torch.ones((s, g), dtype=dtype, device=device)  # initial Hessian scale s·y / y·y
        active = ~self.gradient_below(grad, tol)
        n_iter = torch.zeros((s, g), dtype=torch.int64, device=device)
        # grid columns finished in every set are written out and dropped from the state, so the
        # remaining iterations cost in proportion to the problems still running
        out_theta, out_iter, out_active = theta.clone(), n_iter.clone(), active.clone()
        col_map = torch.arange(g, device=device)
        slot = 0
        for it in range(max_iter):
            if not bool(active.any()):
                break
            col_active = active.any(0)
            if int(col_active.sum()) <= 0.75 * self.g:
                keep = torch.nonzero(col_active)[:, 0]
                out_theta[:, col_map], out_iter[:, col_map], out_active[:, col_map] = theta, n_iter, active
                col_map = col_map[keep]
                theta, logits, f, grad, active, n_iter = (
                    theta[:, keep], logits[:, keep], f[:, keep], grad[:, keep], active[:, keep], n_iter[:, keep]
                )
                s_hist, y_hist, rho = s_hist[:, :, keep], y_hist[:, :, keep], rho[:, :, keep]
                n_stored, gamma = n_stored[:, keep], gamma[:, keep]
                self.keep_columns(keep)
                g = self.g
            # two-loop recursion; a pair from before a problem's last restart has rho = 0 and so
            # leaves q unchanged (no per-pair validity mask needed)
            q = grad.clone()
            alphas = []
            for j in range(min(it, history)):
                k = (slot - 1 - j) % history
                a = rho[k] * torch.linalg.vecdot(s_hist[k], q)
                q -= a[..., None] * y_hist[k]
                alphas.append((k, a))
            q *= torch.where(n_stored > 0, gamma, torch.ones_like(gamma))[..., None] * self.inv_diag
            for k, a in reversed(alphas):
                b = rho[k] * torch.linalg.vecdot(y_hist[k], q)
                q += (a - b)[..., None] * s_hist[k]
            direction = -q
            gd = torch.linalg.vecdot(grad, direction)
            bad = gd >= 0  # not a descent direction: restart from steepest descent
            if bool(bad.any()):
                direction = torch.where(bad[..., None], -grad * self.inv_diag, direction)
                gd = torch.where(bad, -torch.linalg.vecdot(grad * self.inv_diag, grad), gd)
                n_stored = torch.where(bad, torch.zeros_like(n_stored), n_stored)
                rho = rho * ~bad  # forget the pairs of restarted problems
            step = torch.ones((s, g), dtype=dtype, device=device)  # preconditioned: Newton-scaled directions
            x_dir = self.project(direction)
            accepted, new_logits, new_data, new_resid = self.line_search(theta, direction, logits, x_dir, f, gd, step, active)
            moved = active & (accepted > 0)  # a failed search means no decrease is possible in this precision
            s_vec = accepted[..., None] * direction
            new_theta = theta + s_vec
            new_f = new_data + self.penalty(new_theta)
            new_grad = self.gradient(new_theta, new_resid)
            y_vec = new_grad - grad
            sy = torch.linalg.vecdot(s_vec, y_vec)
            yy = torch.linalg.vecdot(y_vec * self.inv_diag, y_vec)
            store = moved & (sy > torch.finfo(dtype).eps * yy) & (yy > 0)
            # a pair that fails the curvature test is stored as zeros (rho 0): the two-loop recursion
            # then ignores it, and every problem's newest n_stored slots stay aligned
            s_hist[slot] = torch.where(store[..., None], s_vec, torch.zeros_like(s_vec))
            y_hist[slot] = torch.where(store[..., None], y_vec, torch.zeros_like(y_vec))
            rho[slot] = torch.where(store, 1.0 / sy.clamp_min(tiny), torch.zeros_like(sy))
            gamma = torch.where(store, sy / yy.clamp_min(tiny), gamma)
            n_stored = torch.where(moved, n_stored + 1, torch.zeros_like(n_stored))
            slot = (slot + 1) % history
            f_prev = f
            theta = torch.where(moved[..., None], new_theta, theta)
            logits = torch.where(moved[..., None, None], new_logits, logits)
            f = torch.where(moved, new_f, f)
            grad = torch.where(moved[..., None], new_grad, grad)
            n_iter += moved.to(torch.int64)
            rel_decrease = (f_prev - f) / torch.maximum(torch.maximum(f_prev.abs(), f.abs()), torch.ones_like(f))
            active = moved & (rel_decrease > ftol) & ~self.gradient_below(grad, tol)
        out_theta[:, col_map], out_iter[:, col_map], out_active[:, col_map] = theta, n_iter, active
        self.g = out_theta.shape[1]
        w, b = self.split(out_theta)
        return LogisticFit(weight=w, bias=b, n_iter=out_iter, converged=~out_active)

    def line_search(
        self,
        theta: torch.Tensor,
        direction: torch.Tensor,
        logits: torch.Tensor,
        x_dir: torch.Tensor,
        f0: torch.Tensor,
        g0: torch.Tensor,
        step: torch.Tensor,
        active: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched strong-Wolfe search along ``direction`` (Nocedal & Wright, algorithms 3.5 and 3.6).

        Every problem brackets (extrapolating ×4 while the slope stays steep), then zooms by
        safeguarded cubic interpolation. Returns the accepted step (S, G) (0 where no decrease was
        found) and the logits, data loss and residuals at it. The best sufficient-decrease point
        seen is kept, so a search that runs out of trials still returns a decrease when one exists.
        """
        w0, _ = self.split(theta)
        wd, _ = self.split(direction)
        w_wd, wdwd = torch.linalg.vecdot(w0.flatten(-2), wd.flatten(-2)), torch.linalg.vecdot(wd.flatten(-2), wd.flatten(-2))
        pen0 = self.penalty(theta)
        zero = torch.zeros_like(f0)

        def trial(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
            """Logits, data loss, residuals, objective and slope at per-problem steps ``t``."""
            trial_logits = logits + t[..., None, None] * x_dir
            data, resid = _data_loss(trial_logits, self.y1h, self.sw_n)
            f_t = data + pen0 + self.l2 * (t * w_wd + t * t * wdwd / 2)
            g_t = (resid * x_dir).sum((-1, -2)) + self.l2 * (w_wd + t * wdwd)
            return trial_logits, data, resid, f_t, g_t

        t = step
        trial_logits, data, resid, f_t, g_t = trial(t)
        # the usual case: every first trial satisfies both Wolfe conditions
        first_ok = (f_t <= f0 + _WOLFE_DECREASE * t * g0) & (g_t.abs() <= -_WOLFE_CURVATURE * g0)
        if bool((first_ok | ~active).all()):
            moved0 = active & first_ok
            return torch.where(moved0, t, zero), trial_logits, torch.where(moved0, data, zero), resid
        # lo: the best point satisfying sufficient decrease so far (t = 0 at the start); hi: bracket end
        t_lo, f_lo, g_lo = zero.clone(), f0.clone(), g0.clone()
        t_hi, f_hi, g_hi = zero.clone(), f0.clone(), g0.clone()
        lo_logits, lo_data, lo_resid = logits, f0 - pen0, torch.zeros_like(logits)
        zooming = torch.zeros_like(active)
        searching = active.clone()
        done = ~active
        for n_trial in range(_MAX_TRIALS):
            if n_trial > 0:
                trial_logits, data, resid, f_t, g_t = trial(t)
            finite = torch.isfinite(f_t) & torch.isfinite(g_t)
            worse = ~finite | (f_t > f0 + _WOLFE_DECREASE * t * g0) | (f_t >= f_lo)
            flat = ~worse & (g_t.abs() <= -_WOLFE_CURVATURE * g0)
            # the trial becomes the new lo where it decreases enough and is the best so far
            new_lo = searching & ~worse
            # bracketing: a worse point or an upward slope closes the bracket
            to_hi = searching & worse
            lo_to_hi = searching & ~worse & ~flat & (
                (~zooming & (g_t >= 0)) | (zooming & (g_t * (t_hi - t_lo) >= 0))
            )
            t_hi = torch.where(to_hi, t, torch.where(lo_to_hi, t_lo, t_hi))
            f_hi = torch.where(to_hi, f_t, torch.where(lo_to_hi, f_lo, f_hi))
            g_hi = torch.where(to_hi, g_t, torch.where(lo_to_hi, g_lo, g_hi))
            zooming = zooming | to_hi | lo_to_hi
            t_lo = torch.where(new_lo, t, t_lo)
            f_lo = torch.where(new_lo, f_t, f_lo)
            g_lo = torch.where(new_lo, g_t, g_lo)
            nl4 = new_lo[..., None, None]
            lo_logits = torch.where(nl4, trial_logits, lo_logits)
            lo_data = torch.where(new_lo, data, lo_data)
            lo_resid = torch.where(nl4, resid, lo_resid)
            width = (t_hi - t_lo).abs()
            collapsed = zooming & (width <= 1e-10 * torch.maximum(t_hi.abs(), t_lo.abs()))
            done = done | (searching & (flat | collapsed))
            searching = ~done
            if not bool(searching.any()):
                break
            # next trial: extrapolate while bracketing, safeguarded cubic interpolation while zooming
            t_cubic = _cubic_minimiser(t_lo, f_lo, g_lo, t_hi, f_hi, g_hi)
            lo_b, hi_b = torch.minimum(t_lo, t_hi), torch.maximum(t_lo, t_hi)
            inside = torch.isfinite(t_cubic) & (t_cubic >= lo_b + 0.1 * width) & (t_cubic <= hi_b - 0.1 * width)
            t_zoom = torch.where(inside, t_cubic, (t_lo + t_hi) / 2)
            t = torch.where(zooming, t_zoom, 4 * t)
        moved = t_lo > 0
        return torch.where(moved, t_lo, zero), lo_logits, torch.where(moved, lo_data, zero), lo_resid


def _cubic_minimiser(
    a: torch.Tensor, fa: torch.Tensor, ga: torch.Tensor, b: torch.Tensor, fb: torch.Tensor, gb: torch.Tensor
) -> torch.Tensor:
    """Minimiser of the cubic through (a, fa, ga) and (b, fb, gb) (Nocedal & Wright eq. 3.59); NaN if none."""
    d1 = ga + gb - 3 * (fa - fb) / (a - b)
    disc = d1 * d1 - ga * gb
    d2 = torch.sign(b - a) * torch.sqrt(disc.clamp_min(0))
    t = b - (b - a) * (gb + d2 - d1) / (gb - ga + 2 * d2)
    return torch.where(disc >= 0, t, torch.full_like(t, float("nan")))
