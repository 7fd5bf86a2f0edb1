"""Benchmark: blocked alignment metrics vs the dense n×n formulas, same process, same data.

Run (defaults finish in a few minutes on a laptop-class CPU)::

    .venv/bin/python -m benchmarks.alignment                       # n ∈ {1000, 2000, 5000}, d = 768
    .venv/bin/python -m benchmarks.alignment --full                # n ∈ {5000, 20000, 50000}
    .venv/bin/python -m benchmarks.alignment --sizes 100000 --metrics sas,linear_cka,coral,svcca

For every metric and n it times the blocked implementation (``medvl.evaluation.alignment``,
float32 inputs, float64 accumulation, ``--memory-budget-gb`` for block buffers) and, where one
exists, the dense reference (``medvl.evaluation.alignment.dense``: full (n, n) float64
matrices), until the dense version's estimated footprint exceeds ``--dense-budget-gb``.
Printed: seconds, peak extra resident memory (VmHWM after resetting it via
``/proc/self/clear_refs``; Linux), ratios dense/blocked, and |blocked − dense|.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from medvl.evaluation.alignment import ALIGNMENT_METRICS, AlignmentOptions, resolve_metric_names
from medvl.evaluation.alignment import dense as D
from medvl.evaluation.alignment.distribution import SAS_REPO_MMD_SCALE, SAS_REPO_MMD_SIGMA, median_bandwidth

GB = 1024**3


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(seconds, peak extra MiB above the resident set at the start, result)."""
    ok = _reset_peak()
    base = _status_kb("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = (_status_kb("VmHWM") - base) / 1024 if ok else math.nan
    return seconds, peak, result


@dataclass
class DenseRef:
    """A dense reference: ``fn(x64, y64) -> dict`` and how many (n, n) float64 buffers it holds."""

    fn: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    n_buffers: float


def dense_refs(sigma: float) -> dict[str, DenseRef]:
    return {
        "sas": DenseRef(lambda x, y: {"sas_it": D.dense_sas(x, y), "sas_ti": D.dense_sas(y, x)}, 0.0),
        "linear_cka": DenseRef(lambda x, y: {"linear_cka": D.dense_linear_cka_gram(x - x.mean(0), y - y.mean(0))}, 6),
        "linear_cka_debiased": DenseRef(
            lambda x, y: {"linear_cka_debiased": D.dense_linear_cka_gram(x - x.mean(0), y - y.mean(0), True)}, 6),
        "rbf_cka": DenseRef(lambda x, y: {"rbf_cka": D.dense_cka(D.rbf_gram(x), D.rbf_gram(y))}, 7),
        "mmd2_rbf": DenseRef(lambda x, y: {"mmd2_rbf": D.dense_mmd2_rbf(x, y, sigma)}, 5),
        "mmd2_rbf_unbiased": DenseRef(lambda x, y: {"mmd2_rbf_unbiased": D.dense_mmd2_rbf(x, y, sigma, True)}, 7),
        "mmd_sas_repo": DenseRef(
            lambda x, y: {"mmd_sas_repo": SAS_REPO_MMD_SCALE * D.dense_mmd2_rbf(x, y, SAS_REPO_MMD_SIGMA)}, 5),
        "delta_cos": DenseRef(lambda x, y: {"delta_cos": D.dense_delta_cos(x, y)}, 3),
        "rmg_schrodi": DenseRef(lambda x, y: {"rmg_schrodi": D.dense_rmg_schrodi(x, y)}, 3),
        "rmg_sas_repo": DenseRef(lambda x, y: {"rmg_sas_repo": D.dense_rmg_sas_repo(x, y)}, 4),
        "mutual_knn": DenseRef(lambda x, y: {"mutual_knn": D.dense_mutual_knn(x, y, 10)}, 3),
        "alignment_uniformity": DenseRef(
            lambda x, y: {"uniformity_image": D.dense_uniformity(x), "uniformity_text": D.dense_uniformity(y)}, 2),
    }


def make_pair(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlated unit-norm float32 pairs (a shared 64-dim latent + modality-specific noise and offset)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 64, generator=g)
    x = z @ torch.randn(64, d, generator=g) + 0.5 * torch.randn(n, d, generator=g)
    y = z[:, :32] @ torch.randn(32, d, generator=g) + torch.randn(n, d, generator=g) + 0.3
    x = torch.nn.functional.normalize(x, dim=1)
    y = torch.nn.functional.normalize(y, dim=1)
    return x.numpy(), y.numpy()


def run_size(n: int, names: list[str], args: argparse.Namespace) -> None:
    """Time every metric at one n and print one line each."""
    x, y = make_pair(n, args.dim, args.seed)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    opts = AlignmentOptions(memory_budget=int(args.memory_budget_gb * GB), seed=args.seed)
    refs = dense_refs(median_bandwidth(tx, ty, seed=args.seed))
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    for name in names:
        t_b, m_b, res_b = measure(partial(ALIGNMENT_METRICS[name].compute, tx, ty, opts))
        ref = refs.get(name)
        line = f"{n:>6} {name:<22} {t_b:>10.3f} {m_b:>11.1f} "
        if ref is None or args.no_dense:
            print(line + ("dense: not run" if args.no_dense else "dense: none (no n×n form)"))
            continue
        need = ref.n_buffers * n * n * 8 / GB
        if need > args.dense_budget_gb:
            print(line + f"dense: skipped (needs ~{need:.1f} GiB)")
            continue
        t_d, m_d, res_d = measure(partial(ref.fn, x64, y64))
        diff = max(abs(res_b[k] - v) for k, v in res_d.items())
        print(line + f"{t_d:>9.3f} {m_d:>10.1f} {t_d / t_b:>7.2f} {m_d / max(m_b, 1.0):>7.1f} {diff:>9.2e}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,2000,5000", help="comma list of n")
    ap.add_argument("--full", action="store_true", help="n ∈ {5000, 20000, 50000} (the issue's set)")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--metrics", default="all", help="registry names or presets (all, fast, paper)")
    ap.add_argument("--memory-budget-gb", type=float, default=1.0, help="block-buffer budget of the blocked metrics")
    ap.add_argument("--dense-budget-gb", type=float, default=4.0, help="skip dense formulas estimated above this")
    ap.add_argument("--no-dense", action="store_true", help="time only the blocked implementations")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sizes = [5000, 20000, 50000] if args.full else [int(s) for s in args.sizes.split(",") if s]
    names = resolve_metric_names(args.metrics)
    print(f"torch threads: {torch.get_num_threads()}, d = {args.dim}, memory budget {args.memory_budget_gb} GiB, "
          f"dense budget {args.dense_budget_gb} GiB")
    header = (f"{'n':>6} {'metric':<22} {'blocked s':>10} {'blocked MiB':>11} {'dense s':>9} {'dense MiB':>10} "
              f"{'time ×':>7} {'mem ×':>7} {'|Δ|':>9}")
    print(header)
    print("-" * len(header))
    for n in sizes:
        run_size(n, names, args)
    print("time × = dense s / blocked s; mem × = dense peak / blocked peak (extra resident MiB over the inputs).")


if __name__ == "__main__":
    main()
