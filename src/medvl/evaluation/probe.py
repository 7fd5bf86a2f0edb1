"""Few-shot linear probes: K shots per class × seeds, L2 strength searched (CLIP) or fixed (DLILP).

Protocol (recorded in every result under ``options``):

* **Tasks**: multiclass and ordinal tasks get one multinomial logistic regression; multilabel
  tasks one binary logistic regression per class (scikit-learn's one-vs-rest), all solved in the
  same batched run.
* **Features**: ``image_features`` (backbone, pre-projection) or ``image_emb`` (projected),
  optionally L2-normalised (``features`` / ``normalize`` options).
* **Shots** (:func:`draw_shots`): for each seed, ``rng = numpy.random.default_rng(seed)``; for
  each class in class-index order the training pool's candidates are permuted with ``rng`` and
  the first K are taken. Multiclass/ordinal: the candidates of a class are its samples (K shots
  per class). Multilabel: **K positives per class** — the candidates are the samples annotated
  positive for that class and not drawn for an earlier class, so every class has at least K
  positives (samples drawn for other classes may add more) and the set's negatives for a class
  are the drawn samples annotated negative for it. **Too few samples**: a class with fewer than
  K candidates contributes all it has (the rule of Dassl/CoOp's few-shot sampler); every such
  (K, class) is counted in ``info.shortfall`` and named in ``info.notes``. ``"all"`` uses the
  whole training pool.
* **Classifier**: intercept, objective ``C·Σ_i w_i·CE_i + ½‖W‖²`` (scikit-learn's
  ``LogisticRegression``; the intercept is not penalised), solved full-batch by the batched L-BFGS
  of :mod:`medvl.evaluation.logistic` (every (set, C) problem of similar size in one run; with
  ``warm_start`` the grid is solved along the C path, as scikit-learn refitted with
  ``warm_start=True`` over increasing C; the same stopping tests as scikit-learn's lbfgs).
  ``class_balance=True`` gives scikit-learn's ``class_weight="balanced"`` weights (multiclass:
  ``n / (n_classes_present · n_{y_i})``; multilabel, per class: ``n / (2 · n_pos)`` and
  ``n / (2 · n_neg)``).
* **C selection** (``c_mode="search"``, the CLIP protocol): every C of ``c_grid`` (then
  ``refine_points`` log-spaced values between the best C's grid neighbours) is fitted on the
  shots and scored on a validation set: the ``val`` split when given, otherwise a held-out
  ``val_fraction`` of the training pool (class-stratified for multiclass tasks, at least one
  sample of every class with ≥ 2; a random fraction of the rows for multilabel tasks), drawn
  *before* the shots with ``default_rng([seed, 1])`` and disjoint from them. Score: accuracy
  (balanced accuracy with ``class_balance``) for multiclass tasks, macro AP over the classes with
  a validation positive for multilabel tasks; ties go to the smaller C (stronger
  regularisation). ``c_mode="fixed"`` uses ``c_fixed`` (DLILP: 0.316 with class balancing) and
  no validation set.
* **Test metrics**: :func:`medvl.evaluation.classification.evaluate_classification` on the test
  split, per seed, aggregated over seeds (mean ± std, median (Q1–Q3)); metric names are
  ``<task>/<K>shot/<metric>``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medvl.config.evaluation import CLIP_C_GRID
from medvl.evaluation.aggregate import summarize_values
from medvl.evaluation.classification import evaluate_classification, labelled_rows, per_class_auroc_ap
from medvl.evaluation.embeddings import EmbeddingSet, EmbeddingSetError, TaskInfo, l2_normalize
from medvl.evaluation.logistic import fit_logistic_batched

#: The CLIP paper's sweep: 96 log-spaced C values from 1e-6 to 1e6 (solved together, so cheap).
DEFAULT_C_GRID: tuple[float, ...] = CLIP_C_GRID

#: Task kinds the probe fits.
PROBE_KINDS = ("multiclass", "ordinal", "multilabel")

#: ``solver_dtype`` → (state/objective precision, matrix-product precision).
_SOLVER_DTYPES: dict[str, tuple[torch.dtype, torch.dtype]] = {
    "float64": (torch.float64, torch.float64),
    "mixed": (torch.float64, torch.float32),
    "float32": (torch.float32, torch.float32),
}

#: Bytes of solver state (logit- and parameter-sized tensors, L-BFGS history) one batched run may
#: hold; a larger grid is solved in column chunks (many classes × a wide feature dim × 96 C values).
_SOLVER_MEMORY = 2 * 1024**3

#: Bytes of validation logits scored in one matrix product.
_SCORE_MEMORY = 256 * 1024**2

#: Padded bucket size (sets × n × min(n, d)) up to which problems share a bucket whatever the padding.
_SMALL_BUCKET = 40_000

__all__ = [
    "DEFAULT_C_GRID",
    "PROBE_KINDS",
    "ShotDraw",
    "draw_shots",
    "evaluate_probe",
    "probe_features",
    "probe_labels",
    "sample_shots",
    "validation_holdout",
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


def probe_labels(emb: EmbeddingSet, task: str) -> tuple[np.ndarray, TaskInfo]:
    """Labels of ``task`` for the probe: (N,) int64 (multiclass/ordinal) or (N, C) float, NaN = unannotated."""
    if task not in emb.labels:
        raise EmbeddingSetError(f"no labels for probe task {task!r} (have {sorted(emb.labels)})")
    info = emb.task(task)
    if info.kind not in PROBE_KINDS:
        raise EmbeddingSetError(f"the linear probe fits {'/'.join(PROBE_KINDS)} tasks; {task!r} is {info.kind}")
    y = np.asarray(emb.labels[task])
    if info.kind == "multilabel":
        if y.ndim != 2 or y.shape[1] != info.num_classes:
            raise EmbeddingSetError(f"labels[{task!r}] must be (N, {info.num_classes}) for a multilabel task, got {y.shape}")
        yf = y.astype(np.float64)
        mask = emb.label_mask.get(task)
        if mask is not None and mask.ndim == 2:
            yf = np.where(mask, yf, np.nan)
        bad = np.isfinite(yf) & (yf != 0) & (yf != 1)
        if bad.any():
            rows = np.flatnonzero(bad.any(1))[:5].tolist()
            raise EmbeddingSetError(f"labels[{task!r}]: multilabel values must be 0, 1 or NaN; rows {rows} have others")
        return yf, info
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        raise EmbeddingSetError(f"labels[{task!r}] has missing values; the probe needs every training label")
    yi = y.astype(np.int64).reshape(len(y))
    bad_rows = np.flatnonzero((yi < 0) | (yi >= info.num_classes))
    if len(bad_rows):
        raise EmbeddingSetError(f"labels[{task!r}]: labels outside [0, {info.num_classes}) at rows {bad_rows[:5].tolist()}")
    return yi, info


@dataclass
class ShotDraw:
    """Indices of one K-shot training set and the classes that had fewer than K candidates."""

    indices: np.ndarray
    shortfall: dict[int, int] = field(default_factory=dict)  # class index → samples (positives) it has


def draw_shots(y: np.ndarray, k: int | str, seed: int, num_classes: int) -> ShotDraw:
    """K shots per class (multiclass) or K positives per class (multilabel); see the module docstring.

    ``y`` is (N,) int class indices or (N, C) float multilabel targets (NaN = unannotated).
    ``"all"`` returns every index. Indices are sorted.
    """
    if k == "all":
        return ShotDraw(np.arange(len(y)))
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"shots must be a positive int or 'all', got {k!r}")
    rng = np.random.default_rng(seed)
    shortfall: dict[int, int] = {}
    if y.ndim == 1:
        chosen = []
        for c in range(num_classes):
            idx = np.flatnonzero(y == c)
            if len(idx) < k:
                shortfall[c] = len(idx)
            chosen.append(rng.permutation(idx)[:k])
        return ShotDraw(np.sort(np.concatenate(chosen)).astype(np.int64), shortfall)
    taken = np.zeros(len(y), dtype=bool)
    positive = np.nan_to_num(y, nan=0.0) == 1
    for c in range(num_classes):
        candidates = np.flatnonzero(positive[:, c] & ~taken)
        taken[rng.permutation(candidates)[:k]] = True
        have = int((positive[:, c] & taken).sum())
        if have < k:
            shortfall[c] = have
    return ShotDraw(np.flatnonzero(taken), shortfall)


def sample_shots(y: np.ndarray, k: int | str, seed: int, num_classes: int) -> np.ndarray:
    """The indices of :func:`draw_shots` (sorted)."""
    return draw_shots(y, k, seed, num_classes).indices


def validation_holdout(y: np.ndarray, fraction: float, seed: int, num_classes: int) -> np.ndarray:
    """Boolean mask of the rows held out of the training pool for the C search (seeded by ``[seed, 1]``).

    Multiclass: ``floor(fraction·n_c)`` per class, at least 1 for a class with ≥ 2 samples.
    Multilabel: ``floor(fraction·n)`` random rows.
    """
    rng = np.random.default_rng([seed, 1])
    held = np.zeros(len(y), dtype=bool)
    if y.ndim == 2:
        held[rng.permutation(len(y))[: int(np.floor(fraction * len(y)))]] = True
        return held
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        n_val = int(np.floor(fraction * len(idx)))
        if n_val == 0 and len(idx) >= 2 and fraction > 0:
            n_val = 1
        held[rng.permutation(idx)[:n_val]] = True
    return held


def _balanced_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """scikit-learn's ``class_weight="balanced"``: (n,) for class indices, (n, C) per class for multilabel."""
    if y.ndim == 2:
        pos = np.nan_to_num(y, nan=0.0) == 1
        neg = np.nan_to_num(y, nan=1.0) == 0
        n_annot = (pos | neg).sum(0).astype(np.float64)
        w_pos = np.divide(n_annot, 2.0 * pos.sum(0), out=np.zeros(y.shape[1]), where=pos.sum(0) > 0)
        w_neg = np.divide(n_annot, 2.0 * neg.sum(0), out=np.zeros(y.shape[1]), where=neg.sum(0) > 0)
        return np.asarray(np.where(pos, w_pos, np.where(neg, w_neg, 0.0)))
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(num_classes)
    w[present] = len(y) / (present.sum() * counts[present])
    return np.asarray(w[y])


def _score_multiclass(y: np.ndarray, pred: np.ndarray, num_classes: int, balanced: bool) -> np.ndarray:
    """Accuracy or balanced accuracy (over the classes present) of each row of ``pred`` (G, n)."""
    if not balanced:
        return np.asarray((pred == y[None, :]).mean(1))
    out = np.zeros(len(pred))
    present = [c for c in range(num_classes) if (y == c).any()]
    for c in present:
        out += (pred[:, y == c] == c).mean(1)
    return out / max(len(present), 1)


def _score_multilabel(y: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Macro AP over the classes with a positive, for each of G score matrices ``logits`` (G, n, C)."""
    g, n, n_cls = logits.shape
    scores = logits.transpose(1, 0, 2).reshape(n, g * n_cls)
    _, ap = per_class_auroc_ap(np.tile(y, (1, g)), scores)
    ap = ap.reshape(g, n_cls)
    valid = np.isfinite(ap).any(0)
    if not valid.any():
        raise EmbeddingSetError("multilabel C search: no class has a positive in the validation set "
                                "(use a val split with positives, a larger val_fraction, or c_mode=fixed)")
    return np.asarray(np.nanmean(ap[:, valid], axis=1))


@dataclass
class _ProbeSet:
    """One (K, seed) training problem with its validation data and C grid."""

    key: str
    x: np.ndarray
    y: np.ndarray  # (n,) int or (n, C) float (NaN = unannotated)
    w: np.ndarray  # (n,) or (n, C) sample weights
    x_val: np.ndarray
    y_val: np.ndarray
    grid: list[float]
    identity: tuple[Any, ...] = ()  # equal identities = the same training and validation data
    weight: torch.Tensor | None = None  # (G, d, C_out) in the original feature space
    bias: torch.Tensor | None = None  # (G, C_out)
    n_not_converged: int = 0


@dataclass
class _Solver:
    """Settings shared by every batched run of one probe."""

    num_classes: int
    multilabel: bool
    device: torch.device
    max_iter: int
    tol: float
    dtype: torch.dtype
    product_dtype: torch.dtype
    warm_start: bool
    progress: Callable[[int], None] | None = None


def _solve_sets(sets: list[_ProbeSet], solver: _Solver) -> None:
    """Fit every set's grid, batching sets of similar size into one L-BFGS run each.

    Sets with the same non-empty ``identity`` and grid (e.g. K="all" for every seed with a fixed
    val split) are solved once. The solver rotates each set onto its rows' principal axes,
    so a set with fewer samples than features costs n × n, not n × d.
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
    if solver.progress is not None and duplicates:
        solver.progress(sum(len(sets[i].grid) for i, _ in duplicates))
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
    n_cls, dev, dtype = solver.num_classes, solver.device, solver.dtype
    for bucket in buckets:
        n_max = max(len(sets[i].y) for i in bucket)
        d = sets[bucket[0]].x.shape[1]
        g_max = max(len(sets[i].grid) for i in bucket)
        xb = torch.zeros((len(bucket), n_max, d), dtype=dtype, device=dev)
        if solver.multilabel:
            yb = torch.full((len(bucket), n_max, n_cls), float("nan"), dtype=dtype, device=dev)
        else:
            yb = torch.zeros((len(bucket), n_max), dtype=torch.int64, device=dev)
        w_shape = (len(bucket), n_max, n_cls) if sets[bucket[0]].w.ndim == 2 else (len(bucket), n_max)
        wb = torch.zeros(w_shape, dtype=dtype, device=dev)
        cb = np.ones((len(bucket), g_max))
        for j, i in enumerate(bucket):
            n_j = len(sets[i].y)
            xb[j, :n_j] = torch.from_numpy(np.asarray(sets[i].x)).to(dtype)
            yb[j, :n_j] = torch.from_numpy(sets[i].y).to(yb.dtype)
            wb[j, :n_j] = torch.from_numpy(np.asarray(sets[i].w, dtype=np.float64)).to(dtype)
            grid = sets[i].grid
            cb[j] = grid + [grid[-1]] * (g_max - len(grid))  # pad by repeating the last C
        # the grid is solved in column chunks when the whole batch's solver state would not fit
        c_out = n_cls if solver.multilabel else (1 if n_cls == 2 else n_cls)
        r = min(n_max, d) + 1
        per_column = len(bucket) * (8 * n_max * c_out + 24 * r * c_out) * torch.finfo(dtype).bits // 8
        chunk = max(1, min(g_max, _SOLVER_MEMORY // max(per_column, 1)))
        parts = [
            fit_logistic_batched(
                xb, yb, cb[:, lo : lo + chunk], n_cls, sample_weight=wb, multilabel=solver.multilabel,
                warm_start=solver.warm_start, max_iter=solver.max_iter, tol=solver.tol, dtype=dtype,
                product_dtype=solver.product_dtype, progress=solver.progress,
            )
            for lo in range(0, g_max, chunk)
        ]
        weight = torch.cat([p.weight for p in parts], dim=1)
        bias = torch.cat([p.bias for p in parts], dim=1)
        converged = torch.cat([p.converged for p in parts], dim=1)
        if converged.ndim == 3:  # multilabel: a (set, C) fit converged when every class did
            converged = converged.all(-1)
        for j, i in enumerate(bucket):
            g = len(sets[i].grid)
            sets[i].weight = weight[j, :g].float()
            sets[i].bias = bias[j, :g].float()
            sets[i].n_not_converged = int((~converged[j, :g]).sum())
    for i, src in duplicates:
        sets[i].weight, sets[i].bias, sets[i].n_not_converged = sets[src].weight, sets[src].bias, sets[src].n_not_converged


def _linear_logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Logits (..., n, C) of many linear models on the same features in one matrix product.

    ``x`` (n, d), ``weight`` (..., d, C), ``bias`` (..., C). One (n × d)·(d × P·C) product instead of P
    thin ones: a product with only C columns runs at a fraction of the BLAS peak.
    """
    lead, (d, c) = weight.shape[:-2], weight.shape[-2:]
    w = weight.reshape(-1, d, c).permute(1, 0, 2).reshape(d, -1)
    out = (x @ w).reshape(len(x), -1, c).permute(1, 0, 2) + bias.reshape(-1, 1, c)
    return out.reshape(*lead, len(x), c)


def _select_all(sets: list[_ProbeSet], num_classes: int, multilabel: bool, balanced: bool,
                device: torch.device) -> list[int]:
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
            c_out = sets[same[0]].bias.shape[-1]  # type: ignore[union-attr]
            per_set = size * len(xv) * c_out * 4
            step = max(1, _SCORE_MEMORY // max(per_set, 1))
            for lo in range(0, len(same), step):
                _score_group(sets, same[lo : lo + step], xv, first, num_classes, multilabel, balanced, best)
    return best


def _score_group(sets: list[_ProbeSet], same: list[int], xv: torch.Tensor, first: _ProbeSet, num_classes: int,
                 multilabel: bool, balanced: bool, best: list[int]) -> None:
    """Validation scores of the sets ``same`` (one matrix product) → their best grid index into ``best``."""
    weight = torch.stack([sets[i].weight for i in same])  # type: ignore[misc]
    bias = torch.stack([sets[i].bias for i in same])  # type: ignore[misc]
    logits = _linear_logits(xv, weight, bias).cpu().numpy()  # (P, G, n, C_out)
    for j, i in enumerate(same):
        if multilabel:
            scores = _score_multilabel(first.y_val, logits[j])
        else:
            pred = (logits[j, ..., 0] > 0).astype(np.int64) if logits.shape[-1] == 1 else logits[j].argmax(-1)
            scores = _score_multiclass(first.y_val, pred, num_classes, balanced)
        best[i] = int(np.flatnonzero(scores == scores.max())[0])


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
    warm_start: bool = True,
    balanced_accuracy_over: str = "present",
    progress: bool = False,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Few-shot linear probe of ``task`` (see the module docstring for the protocol).

    Returns ``{"metrics": {"<task>/<K>shot/<metric>": mean over seeds}, "summaries": {same keys:
    mean, std, median, q1, q3, …}, "options": …, "info": {"per_seed", "chosen_c", "shortfall",
    "fits", "fits_not_converged", "notes", …}}``. ``progress`` draws a bar of the fits on stderr.
    """
    if c_mode not in ("search", "fixed"):
        raise ValueError(f"c_mode must be 'search' or 'fixed', got {c_mode!r}")
    if not seeds:
        raise ValueError("at least one seed is needed")
    if solver_dtype not in _SOLVER_DTYPES:
        raise ValueError(f"solver_dtype must be one of {sorted(_SOLVER_DTYPES)}, got {solver_dtype!r}")
    if not shots:
        raise ValueError("at least one shot count is needed")
    dtype, product_dtype = _SOLVER_DTYPES[solver_dtype]
    train = train.subset(np.flatnonzero(labelled_rows(train, task)))
    test = test.subset(np.flatnonzero(labelled_rows(test, task)))
    if val is not None:
        val = val.subset(np.flatnonzero(labelled_rows(val, task)))
    y_pool, info = probe_labels(train, task)
    y_test, _ = probe_labels(test, task)
    multilabel = info.kind == "multilabel"
    n_cls = info.num_classes
    if len(y_pool) == 0:
        raise EmbeddingSetError(f"probe task {task!r}: the training split has no labelled sample")
    x_pool = probe_features(train, features, normalize)
    x_test = torch.from_numpy(probe_features(test, features, normalize)).to(device)
    empty_x = np.zeros((0, x_pool.shape[1]), np.float32)
    empty_y = y_pool[:0]
    if c_mode == "search" and val is not None:
        y_val_split, _ = probe_labels(val, task)
        x_val_split = probe_features(val, features, normalize)
    grid = [float(c_fixed)] if c_mode == "fixed" else sorted(float(c) for c in c_grid)
    sets: list[_ProbeSet] = []
    shortfall: dict[str, dict[str, int]] = {}
    for k in shots:
        for seed in seeds:
            x_v, y_v = empty_x, empty_y
            pool_idx = np.arange(len(y_pool))
            if c_mode == "search":
                if val is None:
                    held = validation_holdout(y_pool, val_fraction, seed, n_cls)
                    pool_idx = np.flatnonzero(~held)
                    x_v, y_v = x_pool[held], y_pool[held]
                else:
                    x_v, y_v = x_val_split, y_val_split
            draw = draw_shots(y_pool[pool_idx], k, seed, n_cls)
            for c, have in draw.shortfall.items():
                shortfall.setdefault(f"{k}shot", {})[info.classes[c]] = have
            shot_idx = pool_idx[draw.indices]
            y_s = y_pool[shot_idx]
            w_s = _balanced_weights(y_s, n_cls) if class_balance else np.ones(len(shot_idx))
            identity = ("val_split" if c_mode == "search" and val is not None else ("fixed" if c_mode == "fixed" else None),
                        shot_idx.tobytes())
            sets.append(_ProbeSet(f"{k}shot", x_pool[shot_idx], y_s, w_s, x_v, y_v, list(grid),
                                  identity=identity if identity[0] is not None else ()))
    bar = _progress_bar(task, sum(len(st.grid) for st in sets), progress)
    solver = _Solver(n_cls, multilabel, torch.device(device), max_iter, tol, dtype, product_dtype, warm_start,
                     None if bar is None else bar.update)
    try:
        _solve_sets(sets, solver)
        best = [0] * len(sets) if c_mode == "fixed" else _select_all(sets, n_cls, multilabel, class_balance, solver.device)
        if c_mode == "search" and refine_points > 0 and len(grid) > 1:
            # one coarse-to-fine round per set around its best C (the CLIP search protocol)
            fine_sets = []
            for st, b in zip(sets, best, strict=True):
                lo, hi = np.log10(grid[max(b - 1, 0)]), np.log10(grid[min(b + 1, len(grid) - 1)])
                fine = sorted({float(v) for v in 10.0 ** np.linspace(lo, hi, refine_points + 2)} | {grid[b]})
                fine_sets.append(_ProbeSet(st.key, st.x, st.y, st.w, st.x_val, st.y_val, fine, identity=st.identity))
            if bar is not None:
                bar.total += sum(len(st.grid) for st in fine_sets)
            _solve_sets(fine_sets, solver)
            sets = fine_sets
            best = _select_all(sets, n_cls, multilabel, class_balance, solver.device)
    finally:
        if bar is not None:
            bar.close()
    per_seed: dict[str, list[dict[str, float]]] = {}
    chosen_c: dict[str, list[float]] = {}
    chosen_w = torch.stack([st.weight[b] for st, b in zip(sets, best, strict=True)])  # type: ignore[index]
    chosen_b = torch.stack([st.bias[b] for st, b in zip(sets, best, strict=True)])  # type: ignore[index]
    test_logits = _linear_logits(x_test, chosen_w, chosen_b).cpu().numpy()  # (sets, n_test, C_out)
    test_mask = test.label_mask.get(task)
    for j, (st, b) in enumerate(zip(sets, best, strict=True)):
        res = evaluate_classification(test_logits[j], y_test, info, balanced_accuracy_over=balanced_accuracy_over,
                                      label_mask=test_mask if test_mask is not None and test_mask.ndim == 2 else None)
        per_seed.setdefault(st.key, []).append(dict(res["metrics"]))
        chosen_c.setdefault(st.key, []).append(st.grid[b])
    metrics: dict[str, float] = {}
    summaries: dict[str, dict[str, float]] = {}
    for key, runs in per_seed.items():
        for name in runs[0]:
            summary = summarize_values([r[name] for r in runs])
            summaries[f"{task}/{key}/{name}"] = summary
            metrics[f"{task}/{key}/{name}"] = summary["mean"]
    n_fits = sum(len(st.grid) for st in sets)
    not_converged = sum(st.n_not_converged for st in sets)
    noun = "positive" if multilabel else "sample"
    notes = [f"{task} {key}: class {name!r} has {have} training {noun}{'' if have == 1 else 's'} "
             f"(< {key[:-4]}); all {have} used" for key, classes in shortfall.items() for name, have in classes.items()]
    if not_converged:
        notes.append(f"{task}: {not_converged} of {n_fits} logistic fits stopped at max_iter={max_iter} before "
                     f"meeting tol={tol} (raise probe.max_iter, or normalise the features)")
    validation = None if c_mode == "fixed" else ("val split" if val is not None else
                                                 f"{val_fraction} of the train pool, held out before the shots")
    options = {
        "task": task,
        "kind": info.kind,
        "shots": [str(k) for k in shots],
        "shots_definition": "K positives per class (≥ K; drawn in class order)" if multilabel else "K samples per class",
        "too_few_samples": "a class with fewer than K candidates contributes all it has (counted in info.shortfall)",
        "seeds": list(seeds),
        "features": features,
        "normalize": normalize,
        "c_mode": c_mode,
        "c_grid": grid if c_mode == "search" else None,
        "refine_points": refine_points if c_mode == "search" else 0,
        "c_fixed": c_fixed if c_mode == "fixed" else None,
        "validation": validation,
        "selection_metric": ("map_macro" if multilabel else ("balanced_accuracy" if class_balance else "accuracy")),
        "class_balance": class_balance,
        "classifier": "one binary logistic regression per class (one-vs-rest)" if multilabel else "multinomial logistic regression",
        "solver": f"batched full-batch L-BFGS (torch {solver_dtype}), max_iter={max_iter}, tol={tol}, "
                  f"{'warm-started along the C path' if warm_start else 'cold start per C'}",
        "objective": "C·Σ w_i·CE_i + ½‖W‖² (intercept unpenalised)",
        "balanced_accuracy_over": balanced_accuracy_over,
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
            "shortfall": shortfall,
            "fits": n_fits,
            "fits_not_converged": not_converged,
            "notes": notes,
        },
    }


def _progress_bar(task: str, total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"probe {task}", unit="fit", leave=False)
