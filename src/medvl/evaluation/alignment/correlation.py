"""Statistics of alignment studies: correlations with bootstrap confidence intervals, and the
domain tests of the SAS paper.

* :func:`correlate` — Spearman, Kendall (τ-b) or Pearson between two columns, pairs with a NaN
  dropped, point estimate, p-value and percentile bootstrap CI from ``n_resamples`` seeded
  resamples of the pairs (vectorised; resamples in which a column is constant are dropped and
  counted). p-values: for fewer than :data:`PERMUTATION_BELOW` pairs, Spearman and Pearson use a
  permutation test of the pairing (all n! pairings up to n = 8, else 9,999 seeded ones) and
  Kendall scipy's exact test — scipy's t / normal approximations are wrong there (ρ = 1 over 4
  points gets p ≈ 0 instead of the exact 2/4! = 0.083); from that size on, scipy's asymptotic
  p-values. ``p_method`` records which.
* :func:`significance_stars` — ``*`` p < .05, ``**`` p < .01, ``***`` p < .001 from these
  p-values, so a test that cannot reach p < .05 at its n (any correlation over 4 points) never
  gets a star.
* :func:`domain_comparison` — mean ± std (ddof=0, as the SAS repo) per domain and a two-sided
  Mann–Whitney U test (scipy default method).
* :func:`one_sample_t` — one-sample t-test of H0 μ = 0 (the imbalance test);
  :func:`mann_whitney_greater` — one-sided MWU (``a > b``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "CORRELATION_METHODS",
    "CorrelationResult",
    "correlate",
    "domain_comparison",
    "mann_whitney_greater",
    "one_sample_t",
    "significance_stars",
]

CORRELATION_METHODS = ("spearman", "kendall", "pearson")

#: Below this many pairs, p-values come from permutation / exact tests instead of approximations.
PERMUTATION_BELOW = 20
_EXACT_UP_TO = 8  # 8! = 40,320 pairings, enumerated; above, 9,999 seeded random pairings
_PERMUTATIONS = 9999


@dataclass(frozen=True)
class CorrelationResult:
    """``r`` and its two-sided ``p`` on ``n`` complete pairs (``p_method``: ``exact``, ``permutation``
    or ``asymptotic``); ``ci_low``/``ci_high`` the bootstrap percentile interval at ``confidence``
    from ``n_boot_valid`` usable resamples (NaN when none)."""

    method: str
    n: int
    r: float
    p: float
    ci_low: float
    ci_high: float
    confidence: float
    n_boot_valid: int
    p_method: str = "asymptotic"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return asdict(self)


def significance_stars(p: float) -> str:
    """``***`` p < .001, ``**`` p < .01, ``*`` p < .05, else ``""`` (the SAS repo's convention)."""
    if not math.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1.0), np.nan)


def _rowwise_kendall_b(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # τ-b = Σ_{i≠j} sign(a_i−a_j) sign(b_i−b_j) / sqrt(#untied pairs in a · #untied pairs in b);
    # summing over ordered pairs counts every pair twice on both sides, so the ratio is unchanged.
    n = a.shape[1]
    out = np.empty(a.shape[0])
    chunk = max(1, 2_000_000 // max(1, n * n))
    for s in range(0, a.shape[0], chunk):
        sa = np.sign(a[s : s + chunk, :, None] - a[s : s + chunk, None, :]).astype(np.float32)
        sb = np.sign(b[s : s + chunk, :, None] - b[s : s + chunk, None, :]).astype(np.float32)
        num = np.einsum("bij,bij->b", sa, sb, dtype=np.float64)
        den = np.sqrt(np.count_nonzero(sa, axis=(1, 2)).astype(np.float64) * np.count_nonzero(sb, axis=(1, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s : s + chunk] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out


def _rowwise(method: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if method == "pearson":
        return _rowwise_pearson(a, b)
    if method == "spearman":
        return _rowwise_pearson(stats.rankdata(a, axis=1), stats.rankdata(b, axis=1))
    return _rowwise_kendall_b(a, b)


def _pearson_last_axis(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    return (a * b).sum(axis) / np.sqrt((a * a).sum(axis) * (b * b).sum(axis))


def _point(method: str, x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float, str]:
    """``(r, two-sided p, p_method)``; small n get permutation / exact p-values (module docstring)."""
    n = x.size
    if method == "kendall":
        res = stats.kendalltau(x, y)  # τ-b; scipy's 'auto' is exact for small n without ties
        # with ties scipy has no exact null distribution and falls back to the normal approximation
        exact = n < PERMUTATION_BELOW and len(np.unique(x)) == n and len(np.unique(y)) == n
        return float(res.statistic), float(res.pvalue), "exact" if exact else "asymptotic"
    r = float((stats.spearmanr(x, y) if method == "spearman" else stats.pearsonr(x, y)).statistic)
    if n >= PERMUTATION_BELOW:
        res = stats.spearmanr(x, y) if method == "spearman" else stats.pearsonr(x, y)
        return r, float(res.pvalue), "asymptotic"
    a, b = (stats.rankdata(x), stats.rankdata(y)) if method == "spearman" else (x, y)
    return (r, *_permutation_p(a, b, seed))


def _permutation_p(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[float, str]:
    """Two-sided p of the Pearson correlation of ``a`` and ``b`` under random re-pairing: the share of
    pairings with ``|r| ≥ |r_observed|``, over all n! pairings (n ≤ 8) or 9,999 seeded ones (then
    ``(1 + hits) / (1 + 9,999)``, which never reports 0)."""
    import itertools

    n = a.size
    observed = abs(float(_pearson_last_axis(a, b)))
    tol = 1e-12 * max(1.0, observed)
    if n <= _EXACT_UP_TO:
        orders = np.array(list(itertools.permutations(range(n))), dtype=np.intp)
        rs = np.abs(_pearson_last_axis(np.broadcast_to(a, orders.shape), b[orders]))
        return float(np.mean(rs >= observed - tol)), "exact"
    rng = np.random.default_rng(seed)
    orders = np.argsort(rng.random((_PERMUTATIONS, n)), axis=1)
    rs = np.abs(_pearson_last_axis(np.broadcast_to(a, orders.shape), b[orders]))
    return float((1 + np.sum(rs >= observed - tol)) / (1 + _PERMUTATIONS)), "permutation"


def correlate(
    x: np.ndarray | list[float],
    y: np.ndarray | list[float],
    method: str = "spearman",
    *,
    min_n: int = 3,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> CorrelationResult:
    """Correlation of ``x`` and ``y`` (1-D, same length) with a seeded percentile bootstrap CI.

    Pairs with a NaN in either value are dropped; fewer than ``min_n`` complete pairs, or a
    constant column, give NaN (never an exception), so a table can always be filled.
    """
    if method not in CORRELATION_METHODS:
        raise ValueError(f"unknown correlation method {method!r}; choose from {CORRELATION_METHODS}")
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"correlate needs two 1-D arrays of one length, got {xa.shape} and {ya.shape}")
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    n = int(xa.size)
    nan = float("nan")
    if n < min_n or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return CorrelationResult(method, n, nan, nan, nan, nan, confidence, 0)
    r, p, p_method = _point(method, xa, ya, seed)
    lo = hi = nan
    valid = 0
    if n_resamples > 0:
        idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
        boot = _rowwise(method, xa[idx], ya[idx])
        boot = boot[np.isfinite(boot)]
        valid = int(boot.size)
        if valid:
            alpha = 1.0 - confidence
            lo, hi = (float(v) for v in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
    return CorrelationResult(method, n, r, p, lo, hi, confidence, valid, p_method)


def _finite(values: np.ndarray | list[float]) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    return a[np.isfinite(a)]


def domain_comparison(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> dict[str, float]:
    """Mean, std (ddof=0) and n of each group plus a two-sided Mann–Whitney U test (NaN when a group is empty)."""
    fa, fb = _finite(a), _finite(b)
    out = {
        "mean_a": float(fa.mean()) if fa.size else math.nan,
        "std_a": float(fa.std()) if fa.size else math.nan,
        "n_a": float(fa.size),
        "mean_b": float(fb.mean()) if fb.size else math.nan,
        "std_b": float(fb.std()) if fb.size else math.nan,
        "n_b": float(fb.size),
        "mwu_u": math.nan,
        "mwu_p": math.nan,
    }
    if fa.size and fb.size:
        res = stats.mannwhitneyu(fa, fb, alternative="two-sided")
        out["mwu_u"], out["mwu_p"] = float(res.statistic), float(res.pvalue)
    return out


def mann_whitney_greater(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    """One-sided Mann–Whitney U p-value for ``a`` stochastically greater than ``b`` (NaN if a group is empty)."""
    fa, fb = _finite(a), _finite(b)
    if not (fa.size and fb.size):
        return math.nan
    return float(stats.mannwhitneyu(fa, fb, alternative="greater").pvalue)


def one_sample_t(values: np.ndarray | list[float], popmean: float = 0.0) -> dict[str, float]:
    """One-sample t-test of H0 mean = ``popmean``: ``mean``, ``std`` (ddof=1), ``n``, ``t``, ``p`` (two-sided)."""
    f = _finite(values)
    out = {"mean": math.nan, "std": math.nan, "n": float(f.size), "t": math.nan, "p": math.nan}
    if f.size:
        out["mean"] = float(f.mean())
    if f.size >= 2:
        out["std"] = float(f.std(ddof=1))
        if out["std"] > 0:
            res = stats.ttest_1samp(f, popmean)
            out["t"], out["p"] = float(res.statistic), float(res.pvalue)
    return out
