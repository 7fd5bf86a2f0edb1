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
    batched = fit_logistic_batched(xb, yb, [1.0], 3, sample_weight=wb, n_samples=torch.tensor([60.0, 80.0]), tol=1e-9)
    np.testing.assert_allclose(batched.weight[0, 0].numpy(), alone.weight[0, 0].numpy(), atol=1e-5)


def test_flat_large_c_regime_stops_where_sklearn_does() -> None:
    """Few-shot, d ≫ n: at large C the objective is flat along any separating direction and the
    tol = 1e-4 solution depends on the solver's path. Predictions must agree with scikit-learn's
    lbfgs (scipy's line search, stopped by the same tests) at every C, not only where the optimum
    is well determined."""
    rng = np.random.default_rng(0)
    means = rng.normal(size=(5, 256))

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 5
        return means[y] + 6 * rng.normal(size=(n, 256)), y

    x, y = make(10)
    x_val, _ = make(300)
    cs = [1e-3, 1e-1, 10.0, 1e2, 1e4]
    fit = fit_logistic_batched(torch.from_numpy(x)[None], torch.from_numpy(y)[None], cs, 5, tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for gi, c in enumerate(cs):
            sk = LogisticRegression(C=c, tol=1e-4, max_iter=1000).fit(x, y)
            ours = (x_val @ fit.weight[0, gi].numpy() + fit.bias[0, gi].numpy()).argmax(1)
            assert np.mean(ours == sk.predict(x_val)) >= 0.95, c


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
