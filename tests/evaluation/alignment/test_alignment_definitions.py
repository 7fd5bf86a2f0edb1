"""Definitions users must know, pinned against independent references (scipy, numpy, direct formulas):
MMD's median bandwidth (self-distances excluded) vs RBF CKA's (Kornblith: diagonal included), the
exact-by-default median, the mutual k-NN tie rule, and presets that skip a metric whose
precondition fails instead of aborting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform

from medvl.evaluation.alignment import (
    AlignmentInputError,
    AlignmentOptions,
    AlignmentPreconditionError,
    compute_alignment_metrics,
    kernel_cka,
    mmd2_rbf,
    mutual_knn,
)
from medvl.evaluation.alignment.blocked import MEDIAN_STORE_BYTES, median_rows, median_sq_distance
from medvl.evaluation.alignment.dense import dense_cka, dense_mmd2_rbf


def test_mmd_median_bandwidth_excludes_self_distances(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    pooled = np.concatenate([x, y])
    sigma = np.sqrt(np.median(pdist(pooled, "sqeuclidean")))  # distinct pairs only (Gretton's heuristic)
    with_self = np.sqrt(np.median(squareform(pdist(pooled, "sqeuclidean"))))  # n² entries, zeros included
    assert sigma != pytest.approx(with_self, rel=1e-6)  # the choice matters on this data
    for unbiased in (False, True):
        ref = dense_mmd2_rbf(x, y, sigma=sigma, unbiased=unbiased)
        assert mmd2_rbf(x, y, unbiased=unbiased) == pytest.approx(ref, abs=1e-12)
        assert mmd2_rbf(x, y, unbiased=unbiased, memory_budget=3_000) == pytest.approx(ref, abs=1e-12)


def test_rbf_cka_median_includes_the_diagonal(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired

    def kornblith_gram(z: np.ndarray) -> torch.Tensor:  # gram_rbf: np.median of the full matrix
        d2 = squareform(pdist(z, "sqeuclidean"))
        return torch.from_numpy(np.exp(-d2 / (2 * np.median(d2))))

    ref = dense_cka(kornblith_gram(x), kornblith_gram(y), False)
    assert kernel_cka(x, y) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("n", [5, 6, 40, 41])
def test_median_sq_distance_both_definitions(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 3))
    x[1] = x[0]  # a duplicate row: an off-diagonal zero
    t = torch.from_numpy(x)
    d2 = pdist(x, "sqeuclidean")
    assert median_sq_distance(t, include_self=False, budget=200) == pytest.approx(np.median(d2), rel=1e-12)
    assert median_sq_distance(t, include_self=True, budget=200) == pytest.approx(np.median(squareform(d2)), rel=1e-12)


def test_median_is_exact_by_default_where_cheap() -> None:
    # 2 × 2100 pooled rows: the old default (a 4096-row subsample) was not exact here
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2100, 4)).astype(np.float32)
    y = (x + rng.standard_normal((2100, 4))).astype(np.float32)
    pooled = torch.cat([torch.from_numpy(x), torch.from_numpy(y)])
    exact = np.median(pdist(pooled.numpy().astype(np.float64), "sqeuclidean"))
    assert median_sq_distance(pooled, include_self=False) == pytest.approx(exact, rel=1e-5)  # float32 distances
    # the rule: exact while the distinct distances fit in MEDIAN_STORE_BYTES, else the largest subsample that fits
    assert median_rows(16_384, itemsize=4) == 16_384 and median_rows(16_385, itemsize=4) == 16_384
    assert median_rows(10**6, itemsize=8) == 11_585
    assert 16_384 * 16_383 // 2 * 4 <= MEDIAN_STORE_BYTES < 16_385 * 16_384 // 2 * 4
    assert median_rows(5000, max_rows=1000) == 1000
    sub = median_sq_distance(pooled, include_self=False, max_rows=500, seed=3)
    assert sub == median_sq_distance(pooled, include_self=False, max_rows=500, seed=3)  # seeded
    assert sub != median_sq_distance(pooled, include_self=False, max_rows=500, seed=4)


def _stable_mutual_knn(x: np.ndarray, y: np.ndarray, k: int) -> float:
    def knn(z: np.ndarray) -> list[set[int]]:
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        s = z @ z.T
        np.fill_diagonal(s, -np.inf)
        return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in s]

    a, b = knn(x), knn(y)
    return sum(len(p & q) for p, q in zip(a, b, strict=True)) / (len(x) * k)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_mutual_knn_ties_go_to_the_lower_index(k: int) -> None:
    # few distinct directions: most similarities tie, so the neighbour set depends on the tie rule
    rng = np.random.default_rng(k)
    x = rng.integers(0, 2, size=(30, 3)).astype(np.float64) + np.array([1.0, 0, 0])
    y = rng.integers(0, 2, size=(30, 3)).astype(np.float64) + np.array([0, 1.0, 0])
    ref = _stable_mutual_knn(x, y, k)
    assert mutual_knn(x, y, k=k) == pytest.approx(ref, abs=1e-15)
    assert mutual_knn(x, y, k=k, memory_budget=500) == pytest.approx(ref, abs=1e-15)  # block shapes do not matter
    # every row identical: the neighbours of i are the k lowest other indices in both sets
    same = np.ones((12, 4))
    assert mutual_knn(same, same * 2, k=k) == 1.0


@pytest.mark.parametrize("preset", ["all", "paper", "fast"])
@pytest.mark.parametrize(("n", "d"), [(50, 3), (8, 16), (10, 32)])
def test_presets_skip_metrics_whose_preconditions_fail(preset: str, n: int, d: int) -> None:
    rng = np.random.default_rng(n + d)
    x = rng.standard_normal((n, d))
    y = x + rng.standard_normal((n, d))
    rep = compute_alignment_metrics(x, y, preset)
    assert "svcca" in rep.skipped and "SVCCA dims must be in [1," in rep.skipped["svcca"]  # dims 10 > min(n−1, d)
    if preset == "all" and n <= 10:
        assert "k ≤ n − 1" in rep.skipped["mutual_knn"]
    assert "sas_it" in rep.values and "linear_cka" in rep.values  # the others are computed
    for name, reason in rep.skipped.items():
        assert reason and name not in rep.values
    with pytest.raises(AlignmentPreconditionError, match="svcca: SVCCA dims"):
        compute_alignment_metrics(x, y, "sas,svcca")  # named explicitly: an error


def test_presets_still_reject_bad_data() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 4)), rng.standard_normal((20, 4))
    y[[3, 7]] = 0.0
    with pytest.raises(AlignmentInputError, match=r"text: rows \[3, 7\] have zero norm"):
        compute_alignment_metrics(x, y, "all")
    x[5, 1] = np.nan
    with pytest.raises(AlignmentInputError, match=r"rows \[5\]"):
        compute_alignment_metrics(x, y, "fast")
    assert not issubclass(AlignmentInputError, AlignmentPreconditionError)
    opts = AlignmentOptions(svcca_dims=3, knn_k=3)
    assert compute_alignment_metrics(rng.standard_normal((20, 4)), rng.standard_normal((20, 4)), "all", opts).skipped == {}
