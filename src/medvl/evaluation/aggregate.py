"""Aggregation of per-seed / per-fold metric dicts: mean ± std and median (Q1–Q3).

Conventions (the same as ``medvl.experiments.aggregate``): quantiles by linear interpolation
(``numpy.quantile`` default, = ``pandas.Series.quantile``); the standard deviation is the sample
standard deviation (``ddof=1``), NaN for a single value. NaN values (undefined metrics) are left
out and counted in ``n_missing``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["aggregate_metrics", "summarize_values"]


def summarize_values(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """``{n, n_missing, mean, std, median, q1, q3, min, max}`` of the finite values."""
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    n = int(finite.size)
    nan = float("nan")
    q1, median, q3 = (float(q) for q in np.quantile(finite, (0.25, 0.5, 0.75))) if n else (nan, nan, nan)
    return {
        "n": n,
        "n_missing": int(arr.size - n),
        "mean": float(finite.mean()) if n else nan,
        "std": float(finite.std(ddof=1)) if n > 1 else nan,
        "median": median,
        "q1": q1,
        "q3": q3,
        "min": float(finite.min()) if n else nan,
        "max": float(finite.max()) if n else nan,
    }


def aggregate_metrics(runs: Iterable[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Summaries per metric name over several runs (seeds/folds); a metric missing from a run counts as missing."""
    runs = list(runs)
    names: list[str] = []
    for run in runs:
        names.extend(k for k in run if k not in names)
    return {name: summarize_values([run.get(name, float("nan")) for run in runs]) for name in names}
