"""Batched logistic regression (the probe's solver) against scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from medvl.evaluation.logistic import fit_logistic_batched


def _data(rng: np.random.Generator, n: int, n_cls: int, d: int = 12, sep: float = 1.5):
    y = np.arange(n) % n_cls
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[np.arange(n), y] += sep
    return x, y


@pytest.mark.parametrize("n_cls", [2, 4])
def test_solver_matches_sklearn(n_cls: int) -> None:
    rng = np.random.default_rng(0)
    x, y = _data(rng, 120, n_cls)
    cs = [0.01, 0.316, 10.0]
    fit = fit_logistic_batched(torch.from_numpy(x)[None], torch.from_numpy(y)[None], cs, n_cls, tol=1e-8)
    assert bool(fit.converged.all())
    for gi, c in enumerate(cs):
        sk = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(x.astype(np.float64), y)  # float64: sklearn keeps float32
        w = fit.weight[0, gi].numpy()
        b = fit.bias[0, gi].numpy()
        if n_cls == 2:
            np.testing.assert_allclose(w[:, 0], sk.coef_[0], atol=1e-4)
            np.testing.assert_allclose(b[0], sk.intercept_[0], atol=1e-4)
        else:  # multinomial: same coefficients (the L2 penalty makes them unique); intercepts up to a shift
            np.testing.assert_allclose(w.T, sk.coef_, atol=1e-4)
            np.testing.assert_allclose(b - b.mean(), sk.intercept_ - sk.intercept_.mean(), atol=1e-4)


def test_wide_grid_with_converged_columns_skipped_matches_sklearn() -> None:
    """A 9-decade C grid: columns converge at different iterations and later products skip them."""
    rng = np.random.default_rng(3)
    x, y = _data(rng, 90, 3, d=20, sep=1.0)
    cs = [float(c) for c in 10.0 ** np.arange(-4, 5)]
    fit = fit_logistic_batched(torch.from_numpy(x)[None], torch.from_numpy(y)[None], cs, 3, tol=1e-8)
    assert bool(fit.converged.all())
    iters = np.sort(fit.n_iter[0].numpy())
    assert iters[2] < iters[-1]  # ≥ 3 of 9 columns done before the last: the compacted path ran
    for gi, c in enumerate(cs):
        sk = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(x.astype(np.float64), y)
        np.testing.assert_allclose(fit.weight[0, gi].numpy().T, sk.coef_, atol=1e-4 * max(1.0, np.abs(sk.coef_).max()))


def test_sample_weights_and_padding_match_separate_fits() -> None:
    rng = np.random.default_rng(1)
    x, y = _data(rng, 60, 3)
    w = rng.uniform(0.5, 2.0, size=60)
    alone = fit_logistic_batched(torch.from_numpy(x)[None].double(), torch.from_numpy(y)[None], [1.0], 3,
                                 sample_weight=torch.from_numpy(w)[None], tol=1e-9)
    sk = LogisticRegression(C=1.0, max_iter=5000, tol=1e-10).fit(x.astype(np.float64), y, sample_weight=w)
    np.testing.assert_allclose(alone.weight[0, 0].numpy().T, sk.coef_, atol=1e-4)
    # the same problem padded with 20 zero-weight rows inside a batch of two sets
    xp = np.concatenate([x, rng.normal(size=(20, x.shape[1]))]).astype(np.float32)
    yp = np.concatenate([y, np.zeros(20, np.int64)])
    wp = np.concatenate([w, np.zeros(20)])
    xb = torch.from_numpy(np.stack([xp, xp]))
    yb = torch.from_numpy(np.stack([yp, yp]))
    wb = torch.from_numpy(np.stack([wp, np.ones(80)]))
    batched = fit_logistic_batched(xb, yb, [1.0], 3, sample_weight=wb, tol=1e-9)
    np.testing.assert_allclose(batched.weight[0, 0].numpy(), alone.weight[0, 0].numpy(), atol=1e-5)


def _sklearn_objective(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray, c: float) -> tuple[float, float]:
    """scikit-learn's lbfgs objective (its loss / (C·n)) and the max-abs of its gradient, multinomial."""
    from scipy.special import logsumexp

    n = len(y)
    z = x @ w + b
    lse = logsumexp(z, axis=1)
    p = np.exp(z - lse[:, None])
    p[np.arange(n), y] -= 1
    grad = np.concatenate([(x.T @ p / n + w / (c * n)).ravel(), p.sum(0) / n])
    return float((lse - z[np.arange(n), y]).mean() + (w**2).sum() / (2 * c * n)), float(np.abs(grad).max())


@pytest.mark.parametrize("warm_start", [False, True])
def test_flat_large_c_regime_reaches_a_tol_solution_as_good_as_sklearns(warm_start: bool) -> None:
    """Few-shot, d ≫ n: at large C the objective is flat along any separating direction, and which
    point a tol = 1e-4 solver stops at depends on its path — scikit-learn's own warm-started path
    and its cold fit disagree on ~16 % of validation predictions here. What is pinned instead: at
    every C our solution passes scikit-learn's stopping test (max-abs gradient ≤ tol, in the
    original features), its objective is no worse than scikit-learn's, and validation accuracy
    stays within 3 points."""
    rng = np.random.default_rng(0)
    means = rng.normal(size=(5, 256))

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 5
        return means[y] + 6 * rng.normal(size=(n, 256)), y

    x, y = make(10)
    x_val, y_val = make(300)
    cs = [1e-3, 1e-1, 10.0, 1e2, 1e4]
    fit = fit_logistic_batched(torch.from_numpy(x)[None], torch.from_numpy(y)[None], cs, 5, tol=1e-4,
                               warm_start=warm_start)
    assert bool(fit.converged.all())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for gi, c in enumerate(cs):
            sk = LogisticRegression(C=c, tol=1e-4, max_iter=1000).fit(x, y)
            w, b = fit.weight[0, gi].numpy(), fit.bias[0, gi].numpy()
            ours_f, ours_g = _sklearn_objective(x, y, w, b, c)
            sk_f, _ = _sklearn_objective(x, y, sk.coef_.T, sk.intercept_, c)
            assert ours_g <= 1e-4, c
            assert ours_f <= sk_f + 5e-6, c
            ours_acc = np.mean((x_val @ w + b).argmax(1) == y_val)
            assert abs(ours_acc - np.mean(sk.predict(x_val) == y_val)) <= 0.03, c


def test_float32_products_match_float64() -> None:
    """``product_dtype=float32`` keeps float64 state: the fit matches the float64 one closely."""
    rng = np.random.default_rng(2)
    x, y = _data(rng, 300, 4, d=64, sep=0.8)
    xt, yt = torch.from_numpy(x)[None].double(), torch.from_numpy(y)[None]
    cs = [1e-2, 1.0, 100.0]
    full = fit_logistic_batched(xt, yt, cs, 4, tol=1e-6)
    mixed = fit_logistic_batched(xt, yt, cs, 4, tol=1e-6, product_dtype=torch.float32)
    assert mixed.weight.dtype == torch.float64
    assert bool(mixed.converged.all())
    scale = full.weight.abs().amax((-1, -2), keepdim=True)
    assert float(((mixed.weight - full.weight).abs() / scale).max()) < 1e-3
    # logits of every (set, C) model at once, for shared features (n, d) or per-set ones (S, n, d)
    logits = full.logits(xt[0])
    assert logits.shape == (1, 3, 300, 4)
    torch.testing.assert_close(logits[0, 1], xt[0] @ full.weight[0, 1] + full.bias[0, 1])
    torch.testing.assert_close(full.logits(xt), logits)


def _multilabel(rng: np.random.Generator, n: int = 80, d: int = 10, labels: int = 3):
    means = rng.normal(size=(labels, d)) * 1.5
    y = (rng.random((n, labels)) < 0.4).astype(np.float64)
    x = y @ means + rng.normal(size=(n, d))
    y[rng.random((n, labels)) < 0.1] = np.nan  # unannotated entries
    return x, y


@pytest.mark.parametrize("weighted", [False, True])
def test_multilabel_matches_sklearn_one_vs_rest(weighted: bool) -> None:
    """One binary problem per class on its annotated rows = scikit-learn's one-vs-rest LogisticRegression."""
    rng = np.random.default_rng(5)
    x, y = _multilabel(rng)
    w = rng.uniform(0.5, 2.0, size=y.shape) if weighted else None  # per-class weights, e.g. class balancing
    cs = [0.01, 1.0, 30.0]
    fit = fit_logistic_batched(torch.from_numpy(x)[None], torch.from_numpy(y)[None], cs, 3, multilabel=True, tol=1e-10,
                               sample_weight=None if w is None else torch.from_numpy(w)[None])
    assert fit.weight.shape == (1, 3, 10, 3) and fit.bias.shape == (1, 3, 3) and bool(fit.converged.all())
    for gi, c in enumerate(cs):
        for k in range(3):
            rows = np.isfinite(y[:, k])
            sk = LogisticRegression(C=c, max_iter=10000, tol=1e-12).fit(
                x[rows], y[rows, k], sample_weight=None if w is None else w[rows, k])
            np.testing.assert_allclose(fit.weight[0, gi, :, k].numpy(), sk.coef_[0], rtol=1e-4, atol=2e-5)
            np.testing.assert_allclose(fit.bias[0, gi, k].item(), sk.intercept_[0], rtol=1e-4, atol=2e-5)


def test_warm_started_path_reaches_the_cold_optima() -> None:
    """At a tight tolerance the warm-started path and cold starts give the same models, for a 96-value grid."""
    from medvl.config.evaluation import CLIP_C_GRID

    rng = np.random.default_rng(8)
    x, y = _data(rng, 150, 3, d=16, sep=1.0)
    xt, yt = torch.from_numpy(x)[None].double(), torch.from_numpy(y)[None]
    cold = fit_logistic_batched(xt, yt, list(CLIP_C_GRID), 3, tol=1e-9)
    warm = fit_logistic_batched(xt, yt, list(CLIP_C_GRID), 3, tol=1e-9, warm_start=True)
    assert bool(cold.converged.all()) and bool(warm.converged.all())
    scale = cold.weight.abs().amax((-1, -2), keepdim=True).clamp_min(1e-3)
    assert float(((warm.weight - cold.weight).abs() / scale).max()) < 1e-4
    assert warm.n_iter.sum() < cold.n_iter.sum()  # the point of warm starts
    with pytest.raises(ValueError, match="ascending"):
        fit_logistic_batched(xt, yt, [1.0, 0.1], 3, warm_start=True)


def test_path_waves_visit_every_column_once_from_the_next_smaller_c() -> None:
    from medvl.evaluation.logistic import path_waves

    for n in (1, 5, 9, 96):
        waves = path_waves(n)
        order = [c for cols, _ in waves for c in cols]
        assert sorted(order) == list(range(n))
        seen: set[int] = set()
        for cols, sources in waves:
            for c, src in zip(cols, sources, strict=True):
                assert src == -1 or (src == c - 1 and src in seen)  # cold, or warm from the solved C before
            seen.update(cols)
        assert 1 <= len(waves[0][0]) <= 8  # a few cold columns, spread over the grid


def test_ill_conditioned_backbone_features_converge() -> None:
    """LayerNorm-like features (offset, anisotropic, all rows on a hyperplane) used to need thousands of
    L-BFGS iterations at large C; in principal axes with the diagonal preconditioner every C converges."""
    from medvl.config.evaluation import CLIP_C_GRID

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=120)
    z = rng.normal(size=(4, 8))[y] @ rng.normal(size=(8, 32)) + 0.3 * rng.normal(size=(120, 32))
    z = (z - z.mean(1, keepdims=True)) / z.std(1, keepdims=True)
    x = z * rng.uniform(0.2, 1.5, 32) + rng.normal(0.8, 0.3, 32)
    fit = fit_logistic_batched(torch.from_numpy(x)[None], torch.from_numpy(y)[None], list(CLIP_C_GRID), 4,
                               warm_start=True, max_iter=300)
    assert bool(fit.converged.all())
