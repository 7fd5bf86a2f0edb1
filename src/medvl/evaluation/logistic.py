"""Batched L2-regularised logistic regression: many (training set, C) problems in one L-BFGS run.

The solver behind the few-shot linear probe (:mod:`medvl.evaluation.probe`). It minimises, per
problem, scikit-learn's ``LogisticRegression`` objective divided by ``C·n`` (as scikit-learn's own
lbfgs path does)::

    mean_i(w_i · CE_i) + ‖W‖² / (2·C·n)          (intercept not penalised)

with multinomial cross-entropy (``num_classes > 2``) or one logit + sigmoid (binary). Each iteration
does the L-BFGS two-loop recursion for every problem at once, then a strong-Wolfe line search
(the conditions scipy's L-BFGS-B uses: sufficient decrease 1e-3, curvature 0.9; first step
``1/‖d‖``, later steps 1, extrapolation when the slope is still steep). Logits are linear in the
step, so line-search trials cost no matrix product: an iteration is two products (``X·d`` and
``Xᵀ·residual``) for all problems together. Problems start at the intercept that is optimal for
W = 0; those whose penalty dominates (small C) are preconditioned, the others follow plain L-BFGS
so that where the objective is flat (few shots, large C) they stop where scikit-learn stops. Grid
columns finished in every set leave the batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["LogisticFit", "fit_logistic_batched"]

#: Strong-Wolfe constants of scipy's L-BFGS-B line search (dcsrch: ftol, gtol).
_WOLFE_DECREASE = 1e-3
_WOLFE_CURVATURE = 0.9
_MAX_TRIALS = 30
#: A problem is preconditioned when its penalty curvature 1/(C·n) exceeds this share of the data's
#: weight curvature at W = 0 (below it, C is large enough for the solver's path to matter).
_PRECONDITION_RATIO = 1e-3


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
        ce = lse[..., 0] - (logits * y1h[:, None]).sum(-1)
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
    product_dtype: torch.dtype | None = None,
) -> LogisticFit:
    """Fit S×G L2-regularised logistic regressions with one batched L-BFGS.

    ``x`` (S, n, d) features of S training sets, ``y`` (S, n) int64 labels in ``[0, num_classes)``,
    ``c_values`` the G inverse regularisation strengths (scikit-learn's C), shared (G,) or per set
    (S, G). Sets of different sizes are padded: padded rows get ``sample_weight`` 0 and
    ``n_samples`` (S,) gives each set's real size (default n).
    A problem stops when its max-abs gradient is below ``tol`` (scikit-learn's ``tol`` for lbfgs),
    when an iteration decreases the objective by less than ``ftol`` relative (default ``64·eps``,
    scikit-learn's choice), or when the line search can no longer decrease it. Computed in
    ``dtype`` (float64 by default, like scikit-learn). ``product_dtype`` (default ``dtype``) is the
    precision of the two matrix products per iteration: float32 products with float64 state make
    large problems ~3× faster on CPU while the objective, line search and stopping tests stay in
    float64 (the products' rounding only perturbs the search direction). ``history`` L-BFGS pairs
    are kept (5: on these small problems the two-loop recursion's memory traffic costs more than
    the few iterations a longer memory saves; scipy keeps 10).
    """
    if x.ndim != 3 or y.shape != x.shape[:2]:
        raise ValueError(f"x must be (S, n, d) and y (S, n); got {tuple(x.shape)} and {tuple(y.shape)}")
    n_grid = int(np.asarray(c_values).shape[-1])
    with _cpu_threads_for(x.numel() * n_grid * max(num_classes - 1, 1), x.device):
        return _LBFGS(x, y, c_values, num_classes, sample_weight, n_samples, dtype, product_dtype).run(
            max_iter, tol, ftol, history
        )


class _LBFGS:
    """State of one batched solve; problems are indexed (S sets, G C-values), parameters flattened (m,)."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        c_values: Sequence[float] | np.ndarray | torch.Tensor,
        num_classes: int,
        sample_weight: torch.Tensor | None,
        n_samples: torch.Tensor | None,
        dtype: torch.dtype,
        product_dtype: torch.dtype | None,
    ) -> None:
        s, n, d = x.shape
        self.s, self.n, self.d = s, n, d
        self.c_out = 1 if num_classes == 2 else num_classes
        self.device = x.device
        self.dtype = dtype
        self.pdtype = dtype if product_dtype is None else product_dtype
        self.x = x.to(self.pdtype)
        self.x_t = self.x.transpose(1, 2).contiguous()  # (S, d, n): the gradient's product reads it row-wise
        cs = torch.as_tensor(np.asarray(c_values, dtype=np.float64), dtype=dtype, device=self.device)
        if (cs <= 0).any():
            raise ValueError("every C must be > 0")
        if cs.ndim == 1:
            cs = cs[None, :].expand(s, -1)
        self.g = cs.shape[1]
        n_s = torch.full((s,), float(n), dtype=dtype, device=self.device) if n_samples is None else n_samples.to(dtype)
        self.l2 = 1.0 / (cs * n_s[:, None])  # (S, G)
        sw = torch.ones((s, n), dtype=dtype, device=self.device) if sample_weight is None else sample_weight.to(dtype)
        self.sw_n = sw / n_s[:, None]
        self.y1h = (
            y.to(dtype)[..., None] if self.c_out == 1 else torch.nn.functional.one_hot(y.long(), self.c_out).to(dtype)
        )
        self.m = d * self.c_out + self.c_out
        # start at the intercept that is optimal for W = 0 (the weighted log class shares; the
        # binary case their log-odds)
        share = (self.sw_n[..., None] * self.y1h).sum(1) / self.sw_n.sum(1, keepdim=True).clamp_min(1e-300)
        share = share.clamp(1e-6, 1 - 1e-6)  # (S, C_out)
        self.bias0 = torch.log(share) if self.c_out > 1 else torch.log(share) - torch.log1p(-share)
        # Where the penalty dominates the weights' curvature (small C), the unpenalised intercept is
        # far flatter than the weights and plain L-BFGS needs tens of iterations: those problems are
        # preconditioned by rescaling the weight block and each intercept by their curvature at
        # W = 0 (the weight direction stays the gradient's). Large-C problems stay unpreconditioned:
        # their objective is flat near any separating direction, so where a solver stops decides the
        # model, and plain L-BFGS with scipy's line search stops where scikit-learn does.
        var = (share * (1 - share)).clamp_min(1e-3)  # softmax/sigmoid curvature at W = 0
        xsq = torch.einsum("sn,snd->s", self.sw_n, x.to(dtype) ** 2) / d  # (S,) mean squared feature
        data_curv = xsq[:, None] * var.mean(-1, keepdim=True)  # (S, 1)
        self.preconditioned = self.l2 > _PRECONDITION_RATIO * data_curv  # (S, G)
        inv_w = torch.where(self.preconditioned, 1.0 / (self.l2 + data_curv), torch.ones_like(self.l2))
        inv_b = torch.where(self.preconditioned[..., None], 1.0 / var[:, None, :], torch.ones_like(var[:, None, :]))
        self.inv_diag = torch.cat([inv_w[..., None].expand(s, self.g, d * self.c_out), inv_b], dim=-1)  # (S, G, m)

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

    def keep_columns(self, keep: torch.Tensor) -> None:
        """Drop the grid columns not in ``keep`` from the per-problem constants."""
        self.g = len(keep)
        self.l2 = self.l2[:, keep]
        self.inv_diag = self.inv_diag[:, keep]
        self.preconditioned = self.preconditioned[:, keep]

    def penalty(self, theta: torch.Tensor) -> torch.Tensor:
        w, _ = self.split(theta)
        return self.l2 * (w * w).sum((-1, -2)) / 2

    def run(self, max_iter: int, tol: float, ftol: float | None, history: int) -> LogisticFit:
        s, g, m, dtype, device = self.s, self.g, self.m, self.dtype, self.device
        ftol = 64 * torch.finfo(dtype).eps if ftol is None else ftol
        tiny = 1e-300 if dtype == torch.float64 else 1e-30
        theta = torch.zeros((s, g, m), dtype=dtype, device=device)
        theta[..., m - self.c_out :] = self.bias0[:, None, :]
        logits = self.bias0[:, None, None, :].expand(s, g, self.n, self.c_out).clone()
        data, resid = _data_loss(logits, self.y1h, self.sw_n)
        f = data
        grad = self.gradient(theta, resid)
        s_hist = torch.zeros((history, s, g, m), dtype=dtype, device=device)
        y_hist = torch.zeros_like(s_hist)
        rho = torch.zeros((history, s, g), dtype=dtype, device=device)
        n_stored = torch.zeros((s, g), dtype=torch.int64, device=device)  # history slots since the last reset
        gamma = torch.ones((s, g), dtype=dtype, device=device)  # initial Hessian scale s·y / y·y
        active = grad.abs().amax(-1) > tol
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
            # first step after a (re)start: 1 on a preconditioned problem, scipy's 1/‖d‖ otherwise; later 1
            step = torch.where(
                (n_stored == 0) & ~self.preconditioned,
                1.0 / direction.norm(dim=-1).clamp_min(tiny),
                torch.ones((s, g), dtype=dtype, device=device),
            )
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
            active = moved & (grad.abs().amax(-1) > tol) & (rel_decrease > ftol)
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
