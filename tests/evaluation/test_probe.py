"""Linear probe: batched L-BFGS vs scikit-learn, shot sampling, protocols on separable data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from medvl.evaluation.embeddings import EmbeddingSet, EmbeddingSetError
from medvl.evaluation.probe import evaluate_probe, fit_logistic_batched, sample_shots


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


def test_sample_shots_rule() -> None:
    y = np.array([0, 1, 0, 1, 0, 1, 2, 2])
    idx = sample_shots(y, 2, seed=3, num_classes=3)
    assert np.bincount(y[idx]).tolist() == [2, 2, 2]
    np.testing.assert_array_equal(idx, sample_shots(y, 2, seed=3, num_classes=3))
    assert sample_shots(y, "all", 0, 3).tolist() == list(range(8))
    with pytest.raises(EmbeddingSetError, match="class 'c'"):
        sample_shots(y, 3, 0, 3, classes=["a", "b", "c"])


def _sets(rng: np.random.Generator, n_cls: int = 3, d: int = 16):
    means = rng.normal(size=(n_cls, d)) * 4

    def make(n: int) -> EmbeddingSet:
        y = np.arange(n) % n_cls
        x = means[y] + rng.normal(size=(n, d))
        return EmbeddingSet.from_arrays(
            x.astype(np.float32), image_features=x[:, ::-1].copy(), labels={"t": y},
            tasks={"t": {"kind": "multiclass", "classes": [f"c{i}" for i in range(n_cls)]}},
        )

    return make(90), make(30), make(60)


@pytest.mark.parametrize("mode", ["search_val_split", "search_fraction", "fixed"])
def test_probe_separable_reaches_high_accuracy(mode: str) -> None:
    train, val, test = _sets(np.random.default_rng(0))
    kw: dict = {"shots": (1, 4, "all"), "seeds": (0, 1), "features": "projected", "c_grid": (1e-2, 1.0, 100.0),
                "refine_points": 1}
    if mode == "fixed":
        kw.update(c_mode="fixed", class_balance=True)
    elif mode == "search_val_split":
        kw.update(val=val)
    res = evaluate_probe(train, test, "t", **kw)
    m = res["metrics"]
    assert m["allshot/accuracy"] >= 0.98
    assert m["4shot/accuracy"] >= 0.9
    assert res["summaries"]["1shot/accuracy"]["n"] == 2
    assert len(res["info"]["chosen_c"]["4shot"]) == 2
    if mode == "fixed":
        assert res["info"]["chosen_c"]["allshot"] == [0.316, 0.316]


def test_probe_errors() -> None:
    train, _, test = _sets(np.random.default_rng(0))
    with pytest.raises(ValueError, match="c_mode"):
        evaluate_probe(train, test, "t", c_mode="magic")
    with pytest.raises(EmbeddingSetError, match="backbone"):
        evaluate_probe(EmbeddingSet.from_arrays(train.image_emb, labels=train.labels, meta=train.meta), test, "t")
    with pytest.raises(EmbeddingSetError, match="only"):
        evaluate_probe(train, test, "t", shots=(1000,), features="projected")
