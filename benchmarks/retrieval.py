"""Retrieval Recall@K on one set of random embeddings: medvl vs the matmul floor and two baselines.

* **medvl**: ``evaluate_retrieval`` (exact ranks in query chunks, both directions, R@1/5/10,
  MRR, median/mean rank).
* **floor**: the bare similarity matmul over the same query chunks, nothing else — no method
  that looks at every similarity can be faster.
* **full argsort**: build the whole N_img × N_txt matrix and argsort every row (skipped when
  the matrix would exceed ``--baseline-max-gb``).
* **torchmetrics**: ``RetrievalRecall(top_k=K)`` on the flattened full matrix, image→text
  (also size-capped).

Peak extra memory = the highest resident set size (sampled from ``/proc/self/statm`` every 2 ms
by a background thread) minus the RSS just before the call, with the embeddings already
allocated. Times are the best of ``--repeats`` runs.

    .venv/bin/python -m benchmarks.retrieval                      # ~1-2 min here
    .venv/bin/python -m benchmarks.retrieval --images 20000 --captions-per-image 5 --dim 512

Targets: medvl within 1.3× of the floor; peak extra memory < 1 GB.
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from medvl.evaluation.embeddings import EmbeddingSet
from medvl.evaluation.retrieval import DEFAULT_MAX_CHUNK_BYTES, _auto_chunk, evaluate_retrieval

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def measure(fn: Callable[[], Any], repeats: int) -> tuple[float, int]:
    """(best wall time in s, peak extra RSS in bytes over all repeats)."""
    best, peak_extra = float("inf"), 0
    for _ in range(repeats):
        gc.collect()
        base = _rss()
        peak = [base]
        stop = threading.Event()

        def sample(peak: list[int] = peak, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.002)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        t0 = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - t0
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss())
        best = min(best, elapsed)
        peak_extra = max(peak_extra, peak[0] - base)
        del result
    return best, peak_extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--captions-per-image", type=int, default=5)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-max-gb", type=float, default=2.0, help="skip full-matrix baselines above this")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    n_img, n_txt = args.images, args.images * args.captions_per_image
    img = rng.standard_normal((n_img, args.dim), dtype=np.float32)
    c2i = np.repeat(np.arange(n_img), args.captions_per_image)
    txt = (img[c2i] + 12.0 * rng.standard_normal((n_txt, args.dim), dtype=np.float32)).astype(np.float32)
    emb = EmbeddingSet.from_arrays(img, txt, c2i)
    print(f"{n_img} images × {n_txt} captions, d={args.dim}, torch threads {torch.get_num_threads()}")

    def run_medvl() -> dict[str, Any]:
        return evaluate_retrieval(emb, ks=(1, 5, 10))

    qi = torch.nn.functional.normalize(torch.from_numpy(img), dim=1)
    qt = torch.nn.functional.normalize(torch.from_numpy(txt), dim=1)

    def run_floor() -> float:
        total = 0.0
        for q, g in ((qi, qt), (qt, qi)):
            chunk = _auto_chunk(len(g), DEFAULT_MAX_CHUNK_BYTES)
            gt = g.t().contiguous()
            buf = torch.empty((min(chunk, len(q)), len(g)))
            for s in range(0, len(q), chunk):
                out = buf[: min(chunk, len(q) - s)]
                torch.mm(q[s : s + chunk], gt, out=out)
                total += float(out[0, 0])
        return total

    t_medvl, mem_medvl = measure(run_medvl, args.repeats)
    t_floor, mem_floor = measure(run_floor, args.repeats)
    res = run_medvl()["metrics"]
    rows = [("medvl evaluate_retrieval (both directions)", t_medvl, mem_medvl),
            ("matmul floor (same chunks, both directions)", t_floor, mem_floor)]

    full_gb = n_img * n_txt * (4 + 8) / 1024**3
    if full_gb <= args.baseline_max_gb:
        def run_argsort() -> dict[str, float]:
            sims = qi @ qt.T
            order = torch.argsort(sims, dim=1, descending=True, stable=True)
            hit = torch.from_numpy(c2i)[order] == torch.arange(n_img)[:, None]
            ranks = hit.int().argmax(1) + 1
            return {f"i2t/recall@{k}": float((ranks <= k).float().mean()) for k in (1, 5, 10)}

        t_arg, mem_arg = measure(run_argsort, 1)
        rows.append(("full matrix + argsort (i2t only)", t_arg, mem_arg))
        check = run_argsort()
        for k in (1, 5, 10):
            print(f"i2t R@{k}: medvl {res[f'i2t/recall@{k}']:.6f} argsort {check[f'i2t/recall@{k}']:.6f}")

        from torchmetrics.retrieval import RetrievalRecall

        def run_torchmetrics() -> float:
            sims = (qi @ qt.T).flatten()
            target = (torch.from_numpy(c2i)[None, :] == torch.arange(n_img)[:, None]).flatten()
            indexes = torch.arange(n_img).repeat_interleave(n_txt)
            return float(RetrievalRecall(top_k=5)(sims, target, indexes=indexes))

        t_tm, mem_tm = measure(run_torchmetrics, 1)
        rows.append(("torchmetrics RetrievalRecall@5 (i2t only)", t_tm, mem_tm))
        print(f"torchmetrics R@5 (fraction of positives in top 5, averaged) = {run_torchmetrics():.4f}; "
              f"medvl i2t R@5 (any positive in top 5) = {res['i2t/recall@5']:.4f}")
    else:
        print(f"full-matrix baselines skipped: they would need ~{full_gb:.1f} GB (> --baseline-max-gb)")

    print(f"\n{'method':48} {'time (s)':>9} {'× floor':>8} {'peak extra RSS':>15}")
    for name, t, mem in rows:
        print(f"{name:48} {t:9.3f} {t / t_floor:8.2f} {mem / 1024**2:12.0f} MB")
    print(f"\nmedvl / floor = {t_medvl / t_floor:.2f}× (target ≤ 1.3×); medvl peak extra memory "
          f"{mem_medvl / 1024**2:.0f} MB (target < 1024 MB)")
    print(f"R@1/5/10 i2t: {res['i2t/recall@1']:.4f} {res['i2t/recall@5']:.4f} {res['i2t/recall@10']:.4f}; "
          f"t2i: {res['t2i/recall@1']:.4f} {res['t2i/recall@5']:.4f} {res['t2i/recall@10']:.4f}")


if __name__ == "__main__":
    main()
