"""Few-shot linear probes: K shots per class × seeds, L2 strength searched (CLIP) or fixed (DLILP).

Protocol (recorded in every result under ``options``):

* **Features**: ``image_features`` (backbone, pre-projection) or ``image_emb`` (projected),
  optionally L2-normalised (``features`` / ``normalize`` options).
* **Shots**: for each seed, ``rng = numpy.random.default_rng(seed)``; for each class in class-index
  order, the training pool's samples of that class are permuted with ``rng`` and the first K are
  taken. A class with fewer than K training samples is an error naming the class. ``"all"`` uses
  the whole training pool.
* **Classifier**: multinomial logistic regression (binary tasks: one logit + sigmoid), with
  intercept, minimising ``C·Σ_i w_i·CE_i + ½‖W‖²`` (scikit-learn's ``LogisticRegression``
  objective; the intercept is not penalised), solved full-batch with L-BFGS in torch
  (:mod:`medvl.evaluation.logistic`; the same stopping tests and line-search conditions as
  scikit-learn's lbfgs). Every (seed, C) problem of similar size is solved in one batched run;
  a set with fewer samples than features is solved exactly in its row space. ``solver_dtype``
  ``"mixed"`` (default) keeps float64 state with float32 matrix products. ``class_balance=True`` gives
  ``w_i = n / (n_classes_present · n_{y_i})`` (scikit-learn's ``class_weight="balanced"``).
* **C selection** (``c_mode="search"``, the CLIP protocol): every C of ``c_grid`` (then
  ``refine_points`` log-spaced values between the best C's grid neighbours) is fitted on the shots
  and scored on a validation set: the ``val`` split when given, otherwise a class-stratified
  ``val_fraction`` of the training pool held out *before* the shots are drawn (disjoint from them).
  The score is accuracy (balanced accuracy when ``class_balance``); ties go to the smaller C
  (stronger regularisation). ``c_mode="fixed"`` uses ``c_fixed`` (DLILP: 0.316 with class
  balancing) and no validation set.
* **Test metrics**: :func:`medvl.evaluation.classification.evaluate_classification` on the test
  split, per seed, aggregated over seeds (mean ± std, median (Q1–Q3)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medvl.config.evaluation import CLIP_C_GRID
from medvl.evaluation.aggregate import summarize_values
from medvl.evaluation.classification import evaluate_classification, labelled_rows
from medvl.evaluation.embeddings import EmbeddingSet, EmbeddingSetError, TaskInfo, l2_normalize
from medvl.evaluation.logistic import fit_logistic_batched

#: The CLIP paper's sweep: 96 log-spaced C values from 1e-6 to 1e6 (solved together, so cheap).
DEFAULT_C_GRID: tuple[float, ...] = CLIP_C_GRID

#: ``solver_dtype`` → (state/objective precision, matrix-product precision).
_SOLVER_DTYPES: dict[str, tuple[torch.dtype, torch.dtype]] = {
    "float64": (torch.float64, torch.float64),
    "mixed": (torch.float64, torch.float32),
    "float32": (torch.float32, torch.float32),
}

#: Bytes of solver state (logit- and parameter-sized tensors, L-BFGS history) one batched run may
#: hold; a larger grid is solved in column chunks (many classes × a wide feature dim × 96 C values).
_SOLVER_MEMORY = 2 * 1024**3

#: Padded bucket size (sets × n × min(n, d)) up to which problems share a bucket whatever the padding.
_SMALL_BUCKET = 40_000

__all__ = [
    "DEFAULT_C_GRID",
    "evaluate_probe",
    "probe_features",
    "sample_shots",
]


def probe_features(embeddings: EmbeddingSet, features: str = "backbone", normalize: bool = False) -> np.ndarray:
    """(N, d) float32 probe features: ``backbone`` (image_features) or ``projected`` (image_emb)."""
    if features == "backbone":
        if embeddings.image_features is None:
            raise EmbeddingSetError("probe features='backbone' needs image_features in the EmbeddingSet")
        x = embeddings.image_features
    elif features == "projected":
        x = embeddings.image_emb
    else:
        raise ValueError(f"features must be 'backbone' or 'projected', got {features!r}")
    return l2_normalize(x) if normalize else np.asarray(x, dtype=np.float32)


def _stratified_holdout(y: np.ndarray, fraction: float, rng: np.random.Generator, num_classes: int) -> np.ndarray:
    """Boolean mask of a class-stratified held-out subset (floor(fraction·n_c) per class, ≥1 if n_c ≥ 2)."""
    held = np.zeros(len(y), dtype=bool)
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        n_val = int(np.floor(fraction * len(idx)))
        if n_val == 0 and len(idx) >= 2 and fraction > 0:
            n_val = 1
        held[rng.permutation(idx)[:n_val]] = True
    return held


def sample_shots(
    y: np.ndarray, k: int | str, seed: int, num_classes: int, classes: Sequence[str] | None = None
) -> np.ndarray:
    """Indices of K samples per class (class-index order, seeded permutation); ``"all"`` = every index."""
    if k == "all":
        return np.arange(len(y))
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"shots must be a positive int or 'all', got {k!r}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        if len(idx) < k:
            name = classes[c] if classes is not None else str(c)
            raise EmbeddingSetError(f"{k}-shot probe: class {name!r} has only {len(idx)} training samples")
        chosen.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(chosen))


def _balanced_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(num_classes)
    w[present] = len(y) / (present.sum() * counts[present])
    return np.asarray(w[y])


def _score(y: np.ndarray, pred: np.ndarray, num_classes: int, balanced: bool) -> np.ndarray:
    """Accuracy or balanced accuracy of each row of ``pred`` (G, n)."""
    if not balanced:
        return np.asarray((pred == y[None, :]).mean(1))
    out = np.zeros(len(pred))
    present = [c for c in range(num_classes) if (y == c).any()]
    for c in present:
        out += (pred[:, y == c] == c).mean(1)
    return out / max(len(present), 1)


def _labels(emb: EmbeddingSet, task: str) -> tuple[np.ndarray, TaskInfo]:
    if task not in emb.labels:
        raise EmbeddingSetError(f"no labels for probe task {task!r} (have {sorted(emb.labels)})")
    info = emb.task(task)
    if info.kind not in ("multiclass", "ordinal"):
        raise EmbeddingSetError(f"linear probe supports multiclass/ordinal tasks; {task!r} is {info.kind}")
    y = np.asarray(emb.labels[task])
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        raise EmbeddingSetError(f"labels[{task!r}] has missing values; the probe needs every training label")
    return y.astype(np.int64), info


@dataclass
class _ProbeSet:
    """One (K, seed) training problem with its validation data and C grid."""

    key: str
    seed_index: int
    x: np.ndarray
    y: np.ndarray
    w: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    grid: list[float]
    identity: tuple[Any, ...] = ()  # equal identities = the same training and validation data
    weight: torch.Tensor | None = None  # (G, d, C_out) in the original feature space
    bias: torch.Tensor | None = None  # (G, C_out)
    converged: bool = True


def _solve_sets(
    sets: list[_ProbeSet],
    num_classes: int,
    device: str | torch.device,
    max_iter: int,
    tol: float,
    dtype: torch.dtype = torch.float64,
    product_dtype: torch.dtype | None = None,
) -> None:
    """Fit every set's grid, batching sets of similar size into one L-BFGS run each.

    A set with fewer samples than feature dimensions is solved exactly in its samples' row space:
    with ``Xᵀ = QR`` the L2-regularised optimum is ``W = Q·A`` where ``A`` solves the same problem
    on features ``Rᵀ`` (n × n) — the penalty is unchanged because Q has orthonormal columns.
    Sets with the same non-empty ``identity`` and grid (e.g. K="all" for every seed with a fixed
    val split) are solved once.
    """
    first: dict[tuple[Any, ...], int] = {}
    duplicates: list[tuple[int, int]] = []
    unique: list[int] = []
    for i, st in enumerate(sets):
        key = (st.identity, tuple(st.grid))
        if st.identity and key in first:
            duplicates.append((i, first[key]))
        else:
            first[key] = i
            unique.append(i)
    order = sorted(unique, key=lambda i: len(sets[i].y))
    buckets: list[list[int]] = []

    def size(i: int) -> int:  # solved dimension: n × min(n, d)
        n = len(sets[i].y)
        return n * min(n, sets[i].x.shape[1])

    # Small problems are bound by per-iteration overhead: they share a bucket while the padded
    # bucket stays small (typically K = 1…8 shots together). Larger ones get a new bucket when
    # padding would cost > 4×, since padding multiplies every vector operation's memory traffic.
    for i in order:
        if buckets and ((len(buckets[-1]) + 1) * size(i) <= _SMALL_BUCKET or size(i) <= 4 * max(size(buckets[-1][0]), 1)):
            buckets[-1].append(i)
        else:
            buckets.append([i])
    for bucket in buckets:
        bases, feats = [], []
        for i in bucket:
            x = torch.from_numpy(np.asarray(sets[i].x)).to(device=device, dtype=dtype)
            if x.shape[0] < x.shape[1]:
                q, r = torch.linalg.qr(x.t(), mode="reduced")  # x = rᵀ qᵀ
                bases.append(q)
                feats.append(r.t())
            else:
                bases.append(None)
                feats.append(x)
        n_max = max(f.shape[0] for f in feats)
        d_max = max(f.shape[1] for f in feats)
        g_max = max(len(sets[i].grid) for i in bucket)
        xb = torch.zeros((len(bucket), n_max, d_max), dtype=dtype, device=device)
        yb = torch.zeros((len(bucket), n_max), dtype=torch.int64, device=device)
        wb = torch.zeros((len(bucket), n_max), dtype=dtype, device=device)
        cb = np.ones((len(bucket), g_max))
        for j, (i, f) in enumerate(zip(bucket, feats, strict=True)):
            n_j = f.shape[0]
            xb[j, :n_j, : f.shape[1]] = f
            yb[j, :n_j] = torch.from_numpy(sets[i].y)
            wb[j, :n_j] = torch.from_numpy(np.asarray(sets[i].w, dtype=np.float64))
            grid = sets[i].grid
            cb[j] = grid + [grid[-1]] * (g_max - len(grid))  # pad by repeating the last C
        n_real = torch.tensor([len(sets[i].y) for i in bucket], dtype=dtype, device=device)
        # the grid is solved in column chunks when the whole batch's solver state would not fit
        c_out = 1 if num_classes == 2 else num_classes
        per_column = len(bucket) * (8 * n_max * c_out + 24 * (d_max + 1) * c_out) * torch.finfo(dtype).bits // 8
        chunk = max(1, min(g_max, _SOLVER_MEMORY // max(per_column, 1)))
        parts = [
            fit_logistic_batched(
                xb, yb, cb[:, lo : lo + chunk], num_classes, sample_weight=wb, n_samples=n_real, max_iter=max_iter,
                tol=tol, dtype=dtype, product_dtype=product_dtype,
            )
            for lo in range(0, g_max, chunk)
        ]
        weight = torch.cat([p.weight for p in parts], dim=1)
        bias = torch.cat([p.bias for p in parts], dim=1)
        converged = torch.cat([p.converged for p in parts], dim=1)
        for j, i in enumerate(bucket):
            g = len(sets[i].grid)
            a = weight[j, :g, : feats[j].shape[1]]  # (G, r, C_out)
            q = bases[j]
            sets[i].weight = (a if q is None else torch.einsum("dr,grc->gdc", q, a)).float()
            sets[i].bias = bias[j, :g].float()
            sets[i].converged = bool(converged[j, :g].all())
    for i, src in duplicates:
        sets[i].weight, sets[i].bias, sets[i].converged = sets[src].weight, sets[src].bias, sets[src].converged


def _linear_logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Logits (..., n, C) of many linear models on the same features in one matrix product.

    ``x`` (n, d), ``weight`` (..., d, C), ``bias`` (..., C). One (n × d)·(d × P·C) product instead of P
    thin ones: a product with only C columns runs at a fraction of the BLAS peak.
    """
    lead, (d, c) = weight.shape[:-2], weight.shape[-2:]
    w = weight.reshape(-1, d, c).permute(1, 0, 2).reshape(d, -1)
    out = (x @ w).reshape(len(x), -1, c).permute(1, 0, 2) + bias.reshape(-1, 1, c)
    return out.reshape(*lead, len(x), c)


def _select_all(sets: list[_ProbeSet], num_classes: int, balanced: bool, device: str | torch.device) -> list[int]:
    """Per set, the index of the grid C with the best validation score (ties → smaller C; grids ascend).

    Sets that share their validation data (the val split) are scored in one matrix product.
    """
    groups: dict[int, list[int]] = {}
    for i, st in enumerate(sets):
        if len(st.y_val) == 0:
            raise EmbeddingSetError("C search needs a non-empty validation set (val split or val_fraction > 0)")
        groups.setdefault(id(st.x_val), []).append(i)
    best = [0] * len(sets)
    for members in groups.values():
        first = sets[members[0]]
        xv = torch.from_numpy(np.asarray(first.x_val, dtype=np.float32)).to(device)
        for size in sorted({len(sets[i].grid) for i in members}):  # refined grids may differ in length
            same = [i for i in members if len(sets[i].grid) == size]
            weight = torch.stack([sets[i].weight for i in same])  # type: ignore[misc]
            bias = torch.stack([sets[i].bias for i in same])  # type: ignore[misc]
            logits = _linear_logits(xv, weight, bias)  # (P, G, n, C_out)
            pred = ((logits[..., 0] > 0).long() if logits.shape[-1] == 1 else logits.argmax(-1)).cpu().numpy()
            for j, i in enumerate(same):
                scores = _score(first.y_val, pred[j], num_classes, balanced)
                best[i] = int(np.flatnonzero(scores == scores.max())[0])
    return best


def evaluate_probe(
    train: EmbeddingSet,
    test: EmbeddingSet,
    task: str,
    *,
    val: EmbeddingSet | None = None,
    shots: Sequence[int | str] = (1, 2, 4, 8, 16, "all"),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    features: str = "backbone",
    normalize: bool = False,
    c_mode: str = "search",
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    refine_points: int = 0,
    c_fixed: float = 0.316,
    val_fraction: float = 0.2,
    class_balance: bool = False,
    max_iter: int = 1000,
    tol: float = 1e-4,
    solver_dtype: str = "mixed",
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Few-shot linear probe of ``task`` (see the module docstring for the protocol).

    Returns ``{"metrics": {"<K>shot/<metric>": mean over seeds}, "summaries": {same keys: mean, std,
    median, q1, q3, …}, "options": …, "info": {"per_seed": …, "chosen_c": …}}``.
    """
    if c_mode not in ("search", "fixed"):
        raise ValueError(f"c_mode must be 'search' or 'fixed', got {c_mode!r}")
    if not seeds:
        raise ValueError("at least one seed is needed")
    if solver_dtype not in _SOLVER_DTYPES:
        raise ValueError(f"solver_dtype must be one of {sorted(_SOLVER_DTYPES)}, got {solver_dtype!r}")
    dtype, product_dtype = _SOLVER_DTYPES[solver_dtype]
    if not shots:
        raise ValueError("at least one shot count is needed")
    train = train.subset(np.flatnonzero(labelled_rows(train, task)))
    test = test.subset(np.flatnonzero(labelled_rows(test, task)))
    if val is not None:
        val = val.subset(np.flatnonzero(labelled_rows(val, task)))
    y_pool, info = _labels(train, task)
    y_test, _ = _labels(test, task)
    n_cls = info.num_classes
    x_pool = probe_features(train, features, normalize)
    x_test = torch.from_numpy(probe_features(test, features, normalize)).to(device)
    empty_x = np.zeros((0, x_pool.shape[1]), np.float32)
    empty_y = np.zeros(0, np.int64)
    if c_mode == "search" and val is not None:
        y_val_split, _ = _labels(val, task)
        x_val_split = probe_features(val, features, normalize)
    grid = [float(c_fixed)] if c_mode == "fixed" else sorted(float(c) for c in c_grid)
    sets: list[_ProbeSet] = []
    for k in shots:
        for si, seed in enumerate(seeds):
            x_v, y_v = empty_x, empty_y
            pool_idx = np.arange(len(y_pool))
            if c_mode == "search":
                if val is None:
                    held = _stratified_holdout(y_pool, val_fraction, np.random.default_rng([seed, 1]), n_cls)
                    pool_idx = np.flatnonzero(~held)
                    x_v, y_v = x_pool[held], y_pool[held]
                else:
                    x_v, y_v = x_val_split, y_val_split
            shot_idx = pool_idx[sample_shots(y_pool[pool_idx], k, seed, n_cls, info.classes)]
            y_s = y_pool[shot_idx]
            w_s = _balanced_weights(y_s, n_cls) if class_balance else np.ones(len(shot_idx))
            identity = ("val_split" if c_mode == "search" and val is not None else ("fixed" if c_mode == "fixed" else None),
                        shot_idx.tobytes())
            sets.append(
                _ProbeSet(f"{k}shot", si, x_pool[shot_idx], y_s, w_s, x_v, y_v, list(grid),
                          identity=identity if identity[0] is not None else ())
            )
    _solve_sets(sets, n_cls, device, max_iter, tol, dtype, product_dtype)
    best = [0] * len(sets) if c_mode == "fixed" else _select_all(sets, n_cls, class_balance, device)
    if c_mode == "search" and refine_points > 0 and len(grid) > 1:
        # one coarse-to-fine round per set around its best C (the CLIP search protocol)
        fine_sets = []
        for st, b in zip(sets, best, strict=True):
            lo, hi = np.log10(grid[max(b - 1, 0)]), np.log10(grid[min(b + 1, len(grid) - 1)])
            fine = sorted({float(v) for v in 10.0 ** np.linspace(lo, hi, refine_points + 2)} | {grid[b]})
            fine_sets.append(
                _ProbeSet(st.key, st.seed_index, st.x, st.y, st.w, st.x_val, st.y_val, fine, identity=st.identity)
            )
        _solve_sets(fine_sets, n_cls, device, max_iter, tol, dtype, product_dtype)
        sets = fine_sets
        best = _select_all(sets, n_cls, class_balance, device)
    per_seed: dict[str, list[dict[str, float]]] = {}
    chosen_c: dict[str, list[float]] = {}
    not_converged = 0
    chosen_w = torch.stack([st.weight[b] for st, b in zip(sets, best, strict=True)])  # type: ignore[index]
    chosen_b = torch.stack([st.bias[b] for st, b in zip(sets, best, strict=True)])  # type: ignore[index]
    test_logits = _linear_logits(x_test, chosen_w, chosen_b).cpu().numpy()  # (sets, n_test, C_out)
    for j, (st, b) in enumerate(zip(sets, best, strict=True)):
        res = evaluate_classification(test_logits[j], y_test, info)
        per_seed.setdefault(st.key, []).append(dict(res["metrics"]))
        chosen_c.setdefault(st.key, []).append(st.grid[b])
        not_converged += int(not st.converged)
    metrics: dict[str, float] = {}
    summaries: dict[str, dict[str, float]] = {}
    for key, runs in per_seed.items():
        for name in runs[0]:
            summary = summarize_values([r[name] for r in runs])
            summaries[f"{key}/{name}"] = summary
            metrics[f"{key}/{name}"] = summary["mean"]
    options = {
        "task": task,
        "shots": [str(k) for k in shots],
        "seeds": list(seeds),
        "features": features,
        "normalize": normalize,
        "c_mode": c_mode,
        "c_grid": grid if c_mode == "search" else None,
        "refine_points": refine_points if c_mode == "search" else 0,
        "c_fixed": c_fixed if c_mode == "fixed" else None,
        "validation": None if c_mode == "fixed" else ("val split" if val is not None else f"{val_fraction} of train pool"),
        "selection_metric": "balanced_accuracy" if class_balance else "accuracy",
        "class_balance": class_balance,
        "solver": f"batched full-batch L-BFGS (torch {solver_dtype}), max_iter={max_iter}, tol={tol}",
        "objective": "C·Σ w_i·CE_i + ½‖W‖² (intercept unpenalised)",
    }
    return {
        "metrics": metrics,
        "summaries": summaries,
        "options": options,
        "info": {
            "per_seed": per_seed,
            "chosen_c": chosen_c,
            "n_train_pool": len(y_pool),
            "n_test": len(y_test),
            "fits_not_converged": not_converged,
        },
    }
