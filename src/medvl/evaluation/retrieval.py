"""Cross-modal retrieval, image→text and text→image, computed exactly in query chunks.

Definitions (recorded in every result under ``options``):

* Similarity: dot product of the embeddings, L2-normalised first when ``normalize=True``
  (cosine; the default). Computed in float32. With ``normalize=True`` a zero-norm image or
  caption embedding is an error naming its row (its cosine is undefined; silently it would
  score 0 against everything).
* Positives: for image→text, every caption whose ``caption_to_image`` is the query image (all
  captions of an image are in the gallery); for text→image, the caption's own image.
* Rank of a query: 1-based position of its *best-ranked* positive in the gallery sorted by
  decreasing similarity. **Ties are broken by gallery index** (lower index ranks first), as a
  stable sort of ``-similarity`` would do; the best positive among equal-scored positives is the
  one with the lowest index.
* Recall@K: fraction of queries whose rank is ≤ K (any positive in the top K, the CLIP and
  CLIP_benchmark definition). MRR = mean(1/rank); median and mean rank over queries.
  Queries without any positive (images without captions) are left out and counted.
* Label-aware metrics (``label_task`` given): a gallery item's label is its image's label.
  precision@K = fraction of the top-K retrieved items whose label matches the query's
  (multiclass/ordinal: equal; multilabel ``"exact"``: identical label vector, where an
  **unannotated entry (NaN or masked) never matches** — not even another unannotated one, so a
  query or item with any unannotated class has no exact match; ``"overlap"``: sharing at least
  one annotated positive class). Retrieval κ (quadratic) compares the query's label with the
  label of the top-1 retrieved item (the Balancing Act's "retrieval κ²"), for
  multiclass/ordinal tasks, with weights ``(i − j)²`` by **grade value over all C classes** of
  the task (as :func:`medvl.evaluation.classification.quadratic_kappa` with ``num_classes``;
  ``sklearn.metrics.cohen_kappa_score(labels=range(C), weights="quadratic")``), not by position
  among the grades that occur. Labels are validated first: a multiclass/ordinal label outside
  ``[0, C)``, or an unannotated image, is an error naming the row. With ``exclude_own=True`` the query's own paired items (its
  positives) are removed from the gallery for these label-aware metrics; by default they stay
  in, as in the Balancing Act. Instance recall always uses the full gallery.

The full N_q × N_g matrix is never built: queries are processed in chunks whose similarity
block stays under ``max_chunk_bytes``. The ranking logic does not depend on the chunk size;
the only chunk dependence left is BLAS rounding of a dot product, which can differ in the last
bit between matrix shapes (exactly representable similarities give identical results).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medvl.evaluation.classification import quadratic_kappa
from medvl.evaluation.embeddings import EmbeddingSet, EmbeddingSetError, check_nonzero_rows
from medvl.evaluation.ranking import topk_lowest_index

__all__ = ["RetrievalScan", "evaluate_retrieval", "positives_from_groups", "retrieval_labels", "retrieval_scan"]

DIRECTIONS = ("i2t", "t2i")
DEFAULT_MAX_CHUNK_BYTES = 256 * 1024**2


def positives_from_groups(query_to_group: np.ndarray, gallery_to_group: np.ndarray) -> torch.Tensor:
    """Padded (N_q, P) int64 matrix of gallery indices sharing the query's group, ascending, -1 padded."""
    q = np.asarray(query_to_group, dtype=np.int64)
    g = np.asarray(gallery_to_group, dtype=np.int64)
    order = np.argsort(g, kind="stable")
    sorted_groups = g[order]
    start = np.searchsorted(sorted_groups, q, side="left")
    stop = np.searchsorted(sorted_groups, q, side="right")
    counts = stop - start
    width = max(int(counts.max(initial=0)), 1)
    out = np.full((len(q), width), -1, dtype=np.int64)
    for j in range(width):
        has = counts > j
        out[has, j] = order[start[has] + j]
    out.sort(axis=1)  # ascending gallery index, -1 first ...
    out = np.where(out < 0, np.iinfo(np.int64).max, out)
    out.sort(axis=1)  # ... so move the padding to the end
    out[out == np.iinfo(np.int64).max] = -1
    return torch.from_numpy(out)


class RetrievalScan:
    """Per-query outputs of one chunked pass: ranks, top-1 index, relevant counts at each K."""

    def __init__(self, ranks: torch.Tensor, top1: torch.Tensor | None, relevant: dict[int, torch.Tensor]):
        self.ranks = ranks  # (N_q,) int64, 0 where the query has no positive
        self.top1 = top1  # (N_q,) int64 or None
        self.relevant = relevant  # K -> (N_q,) int64 count of relevant items in the top K


def _auto_chunk(n_gallery: int, max_chunk_bytes: int) -> int:
    # float32 similarities + a bool scratch row + headroom for top-k work
    per_row = max(n_gallery, 1) * (4 + 1 + 4)
    return max(1, int(max_chunk_bytes // per_row))


@torch.no_grad()
def retrieval_scan(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    positives: torch.Tensor,
    *,
    precision_ks: Sequence[int] = (),
    query_labels: torch.Tensor | None = None,
    gallery_labels: torch.Tensor | None = None,
    multilabel_relevance: str = "exact",
    want_top1: bool = False,
    exclude_own: bool = False,
    chunk_size: int | None = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> RetrievalScan:
    """One exact pass over ``queries @ gallery.T`` in chunks (inputs already normalised if wanted).

    ``positives`` is a (N_q, P) int64 matrix of gallery indices (ascending, -1 padded).
    Label-aware outputs (top-1 index and relevant counts) honour ``exclude_own``.
    """
    n_q, n_g = queries.shape[0], gallery.shape[0]
    device = queries.device
    chunk = chunk_size or _auto_chunk(n_g, max_chunk_bytes)
    gallery_t = gallery.t().contiguous()
    positives = positives.to(device)
    ar = torch.arange(n_g, device=device)
    ranks = torch.zeros(n_q, dtype=torch.int64, device=device)
    top1 = torch.zeros(n_q, dtype=torch.int64, device=device) if want_top1 else None
    ks = sorted({int(k) for k in precision_ks})
    relevant = {k: torch.zeros(n_q, dtype=torch.int64, device=device) for k in ks}
    if ks and (query_labels is None or gallery_labels is None):
        raise ValueError("precision@K needs query_labels and gallery_labels")
    n_excluded_max = int((positives >= 0).sum(1).max().item()) if exclude_own and n_q else 0
    if ks and max(ks) > n_g - n_excluded_max:
        raise ValueError(f"precision@{max(ks)} needs a gallery of at least {max(ks)} items (have {n_g - n_excluded_max})")
    buf = torch.empty((min(chunk, n_q), n_g), dtype=torch.float32, device=device)
    acc_dtype = torch.float32 if n_g < 2**24 else torch.float64
    for start in range(0, n_q, chunk):
        stop = min(start + chunk, n_q)
        rows = stop - start
        s = buf[:rows]
        torch.mm(queries[start:stop], gallery_t, out=s)
        pos = positives[start:stop]
        valid = pos >= 0
        has_pos = valid.any(1)
        pos_scores = s.gather(1, pos.clamp(min=0)).masked_fill(~valid, float("-inf"))
        which = pos_scores.argmax(1, keepdim=True)  # first max -> lowest gallery index among ties
        best = pos_scores.gather(1, which)
        best_j = pos.gather(1, which)
        if exclude_own:  # positives leave the gallery of the label-aware metrics (not of the ranks)
            r_idx, c_idx = torch.nonzero(valid, as_tuple=True)
            s[r_idx, pos[r_idx, c_idx]] = float("-inf")
        if top1 is not None:
            top1[start:stop] = s.argmax(1)
        if ks:
            assert query_labels is not None and gallery_labels is not None
            vals, idx = torch.topk(s, max(ks), dim=1, largest=True, sorted=True)
            ql = query_labels[start:stop]
            for k in ks:
                chosen = topk_lowest_index(s, k, vals, idx)
                gl = gallery_labels[chosen]  # (rows, k[, C])
                if gl.ndim == 3:
                    q3 = ql[:, None, :]
                    if multilabel_relevance == "exact":  # -1 = unannotated: never equal to anything
                        match = ((gl == q3) & (gl >= 0)).all(-1)
                    else:
                        match = ((gl > 0) & (q3 > 0)).any(-1)
                else:
                    match = gl == ql[:, None]
                relevant[k][start:stop] = match.sum(1)
        # Rank = 1 + #items scoring above the best positive + #tied items with a lower index.
        # Counted in place with float sums of sign(s - best), which vectorise far better than
        # boolean counts: Σsign = n_gt − n_lt and Σ|sign| = n_gt + n_lt (exact below 2^24 items).
        sign = s.sub_(best).sign_()
        total = sign.sum(1, dtype=acc_dtype)
        absolute = torch.linalg.vector_norm(sign, ord=1, dim=1, dtype=acc_dtype)
        n_gt = ((total + absolute) / 2).round().to(torch.int64)
        n_eq = n_g - absolute.round().to(torch.int64)  # includes the best positive unless excluded
        r = n_gt + 1
        tie_rows = torch.nonzero(n_eq > (0 if exclude_own else 1)).flatten()
        if len(tie_rows):
            earlier = (sign[tie_rows] == 0) & (ar[None, :] < best_j[tie_rows])
            r[tie_rows] += earlier.sum(1)
        ranks[start:stop] = torch.where(has_pos, r, torch.zeros_like(r))
    return RetrievalScan(ranks=ranks.cpu(), top1=None if top1 is None else top1.cpu(), relevant={k: v.cpu() for k, v in relevant.items()})


def _rows_named(emb: EmbeddingSet, rows: np.ndarray) -> str:
    shown = ", ".join(f"{int(i)} ({emb.image_ids[int(i)]!r})" for i in rows[:5])
    return shown + (f", … ({len(rows)} in total)" if len(rows) > 5 else "")


def retrieval_labels(embeddings: EmbeddingSet, task: str) -> tuple[torch.Tensor, bool]:
    """Labels of ``task`` for label-aware retrieval, validated; returns ``(labels, single_label)``.

    Multiclass/ordinal: (N,) int64 in ``[0, C)``; a label outside that range, a non-integer, NaN,
    -1 or a False ``label_mask`` is an error naming the row (every image needs a label here).
    Multilabel: (N, C) float32 with 1 = positive, 0 = negative, **-1 = unannotated** (NaN or a
    False ``label_mask`` entry); other values are an error naming the row.
    """
    info = embeddings.task(task)
    n_cls = info.num_classes
    lab = np.asarray(embeddings.labels[task])
    mask = embeddings.label_mask.get(task)
    if info.kind == "multilabel" or lab.ndim == 2:
        if lab.ndim != 2 or lab.shape[1] != n_cls:
            raise EmbeddingSetError(f"labels[{task!r}]: multilabel labels must be (N, {n_cls}), got {lab.shape}")
        lf = lab.astype(np.float64)
        annotated = np.isfinite(lf) if mask is None else (np.isfinite(lf) & np.asarray(mask, bool).reshape(lf.shape))
        bad = np.flatnonzero((annotated & (lf != 0) & (lf != 1)).any(1))
        if len(bad):
            raise EmbeddingSetError(f"labels[{task!r}]: multilabel values must be 0 or 1 (NaN = unannotated); "
                                    f"rows {_rows_named(embeddings, bad)} have others")
        return torch.from_numpy(np.where(annotated, lf, -1.0).astype(np.float32)), False
    if info.kind == "regression":
        raise EmbeddingSetError(f"label-aware retrieval needs class labels; {task!r} is a regression task")
    lf = lab.astype(np.float64).reshape(len(lab))
    unannotated = ~np.isfinite(lf) | (lf == -1)
    if mask is not None:
        unannotated |= ~np.asarray(mask, bool).reshape(len(lab))
    if unannotated.any():
        raise EmbeddingSetError(
            f"labels[{task!r}] has unannotated images (NaN, -1 or masked: rows {_rows_named(embeddings, np.flatnonzero(unannotated))}); "
            "label-aware retrieval metrics need every image labelled (evaluate a labelled subset)"
        )
    bad = np.flatnonzero((lf < 0) | (lf >= n_cls) | (lf != np.round(lf)))
    if len(bad):
        raise EmbeddingSetError(f"labels[{task!r}]: labels outside the {n_cls} classes [0, {n_cls}) or not integers "
                                f"at rows {_rows_named(embeddings, bad)}")
    return torch.from_numpy(lf.astype(np.int64)), True


def _summaries(prefix: str, ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in ks:
        out[f"{prefix}/recall@{k}"] = float(np.mean(ranks <= k)) if len(ranks) else float("nan")
    out[f"{prefix}/mrr"] = float(np.mean(1.0 / ranks)) if len(ranks) else float("nan")
    out[f"{prefix}/median_rank"] = float(np.median(ranks)) if len(ranks) else float("nan")
    out[f"{prefix}/mean_rank"] = float(np.mean(ranks)) if len(ranks) else float("nan")
    return out


def evaluate_retrieval(
    embeddings: EmbeddingSet,
    *,
    ks: Sequence[int] = (1, 5, 10),
    directions: Sequence[str] = DIRECTIONS,
    normalize: bool = True,
    label_tasks: Sequence[str] = (),
    precision_ks: Sequence[int] = (1, 5, 10),
    multilabel_relevance: str = "exact",
    exclude_own: bool = False,
    chunk_size: int | None = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Recall@K, MRR, median/mean rank both ways; label precision@K and retrieval κ per label task.

    Returns ``{"metrics": {name: value}, "options": {...}, "info": {...}}`` with metric names like
    ``i2t/recall@5``, ``t2i/mrr``, ``i2t/<task>/precision@5``, ``i2t/<task>/kappa_quadratic``.
    """
    for d in directions:
        if d not in DIRECTIONS:
            raise ValueError(f"unknown retrieval direction {d!r}; choose from {DIRECTIONS}")
    if multilabel_relevance not in ("exact", "overlap"):
        raise ValueError("multilabel_relevance must be 'exact' or 'overlap'")
    if any(int(k) < 1 for k in (*ks, *precision_ks)):
        raise ValueError("every K must be ≥ 1")
    if embeddings.num_texts == 0 or embeddings.num_images == 0:
        raise EmbeddingSetError("retrieval needs at least one image and one caption")
    dev = torch.device(device)
    img = torch.from_numpy(embeddings.image_emb).to(dev)
    txt = torch.from_numpy(embeddings.text_emb).to(dev)
    if normalize:
        check_nonzero_rows(embeddings.image_emb, "retrieval: image_emb", embeddings.image_ids)
        check_nonzero_rows(embeddings.text_emb, "retrieval: text_emb (captions)",
                           lambda j: f"caption of image {embeddings.image_ids[int(embeddings.caption_to_image[j])]}")
        img = torch.nn.functional.normalize(img, dim=1)
        txt = torch.nn.functional.normalize(txt, dim=1)
    c2i = embeddings.caption_to_image
    n_img = embeddings.num_images
    metrics: dict[str, float] = {}
    info: dict[str, Any] = {"n_images": n_img, "n_captions": embeddings.num_texts}
    for name in label_tasks:
        if name not in embeddings.labels:
            raise EmbeddingSetError(f"label task {name!r} not in the EmbeddingSet labels ({sorted(embeddings.labels)})")
    task_labels = {name: retrieval_labels(embeddings, name) for name in label_tasks}  # validated before any work
    for direction in directions:
        if direction == "i2t":
            queries, gallery = img, txt
            positives = positives_from_groups(np.arange(n_img), c2i)
            q_img, g_img = np.arange(n_img), c2i
        else:
            queries, gallery = txt, img
            positives = torch.from_numpy(c2i.astype(np.int64)[:, None].copy())
            q_img, g_img = c2i, np.arange(n_img)
        tasks: list[str | None] = [*label_tasks] or [None]
        for t_i, task in enumerate(tasks):
            kw: dict[str, Any] = {}
            single_label = False
            if task is not None:
                lab_t, single_label = task_labels[task]
                kw = {
                    "precision_ks": precision_ks,
                    "query_labels": lab_t[torch.from_numpy(q_img)].to(dev),
                    "gallery_labels": lab_t[torch.from_numpy(g_img)].to(dev),
                    "want_top1": single_label,
                }
            scan = retrieval_scan(
                queries,
                gallery,
                positives,
                multilabel_relevance=multilabel_relevance,
                exclude_own=exclude_own,
                chunk_size=chunk_size,
                max_chunk_bytes=max_chunk_bytes,
                **kw,
            )
            if t_i == 0:
                ranks = scan.ranks.numpy()
                has = ranks > 0
                metrics.update(_summaries(direction, ranks[has].astype(np.float64), ks))
                info[f"{direction}/n_queries"] = int(has.sum())
                info[f"{direction}/n_queries_without_positive"] = int((~has).sum())
            if task is None:
                continue
            for k in sorted({int(k) for k in precision_ks}):
                metrics[f"{direction}/{task}/precision@{k}"] = float(scan.relevant[k].numpy().mean() / k)
            if scan.top1 is not None:
                lab = lab_t.numpy()
                q_lab = lab[q_img]
                r_lab = lab[g_img[scan.top1.numpy()]]
                metrics[f"{direction}/{task}/top1_label_accuracy"] = float(np.mean(q_lab == r_lab))
                # weights (i − j)² by grade value over all C classes, not by position among the
                # grades that happen to occur (which would make grades {0, 1, 3} look equidistant)
                metrics[f"{direction}/{task}/kappa_quadratic"] = quadratic_kappa(
                    q_lab, r_lab, embeddings.task(task).num_classes
                )
    options = {
        "ks": [int(k) for k in ks],
        "directions": list(directions),
        "normalize": normalize,
        "similarity": "cosine" if normalize else "dot",
        "recall_definition": "fraction of queries with any positive in the top K",
        "tie_breaking": "lower gallery index ranks first",
        "label_tasks": list(label_tasks),
        "precision_ks": [int(k) for k in precision_ks],
        "multilabel_relevance": multilabel_relevance,
        "multilabel_unannotated": "never matches (exact); never a shared positive (overlap)",
        "kappa_weights": "quadratic (i - j)^2 by grade value over all C classes of the task",
        "exclude_own": exclude_own,
        "exclude_own_applies_to": "label-aware metrics (precision@K, retrieval kappa)",
    }
    return {"metrics": metrics, "options": options, "info": info}
