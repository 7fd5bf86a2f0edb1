"""Turn an :class:`~medvl.evaluation.embeddings.EmbeddingSet` into the paired ``(n, d)`` arrays
the alignment metrics take: one row per image and one text row per image.

An image may have several captions; ``caption="first"`` takes the first caption listed for it
(lowest text index — the SAS repo's choice, ``d["text"][:1]``), ``caption="mean"`` the mean of
its (normalised, when ``normalize``) caption embeddings. Both sides are L2-normalised when
``normalize`` (the SAS pipeline normalises projected features before every metric).
Images without a caption are an error naming them, or with ``on_missing="skip"`` are dropped
and counted in :attr:`PairedEmbeddings.n_skipped`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medvl.evaluation.alignment.validation import AlignmentInputError

if TYPE_CHECKING:
    from medvl.evaluation.embeddings import EmbeddingSet

__all__ = ["CAPTION_MODES", "PairedEmbeddings", "paired_embeddings"]

CAPTION_MODES = ("first", "mean")


@dataclass(frozen=True)
class PairedEmbeddings:
    """``image (n, d)`` and ``text (n, d)`` float32 rows paired by index, the image ids kept, how
    many images were skipped (no caption), and how the text row was chosen."""

    image: np.ndarray
    text: np.ndarray
    image_ids: list[str]
    n_skipped: int
    caption: str
    normalized: bool


def _normalize(a: np.ndarray, what: str, ids: list[str]) -> np.ndarray:
    norms = np.linalg.norm(a.astype(np.float64), axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        shown = ", ".join(repr(ids[i]) for i in zero[:10])
        raise AlignmentInputError(f"{what} embeddings of images {shown} have zero norm and cannot be normalised")
    return (a / norms).astype(np.float32)


def paired_embeddings(
    emb: EmbeddingSet,
    *,
    caption: str = "first",
    normalize: bool = True,
    on_missing: str = "error",
) -> PairedEmbeddings:
    """Image rows and one text row per image from ``emb`` (see the module docstring)."""
    if caption not in CAPTION_MODES:
        raise AlignmentInputError(f"caption must be one of {CAPTION_MODES}, got {caption!r}")
    if on_missing not in ("error", "skip"):
        raise AlignmentInputError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    n_img = emb.num_images
    c2i = np.asarray(emb.caption_to_image, dtype=np.int64)
    counts = np.bincount(c2i, minlength=n_img)
    missing = np.flatnonzero(counts == 0)
    if missing.size and on_missing == "error":
        shown = ", ".join(repr(emb.image_ids[i]) for i in missing[:10])
        more = f" … ({missing.size} in total)" if missing.size > 10 else ""
        raise AlignmentInputError(
            f"images without any caption: {shown}{more}; alignment needs one text per image "
            "(use on_missing='skip' to leave them out, counted)"
        )
    keep = np.flatnonzero(counts > 0)
    image = np.asarray(emb.image_emb, dtype=np.float32)
    text_all = np.asarray(emb.text_emb, dtype=np.float32)
    if normalize:
        image = _normalize(image, "image", emb.image_ids)
        text_all = _normalize(text_all, "text", [emb.image_ids[i] for i in c2i])
    if caption == "first":
        first = np.full(n_img, -1, dtype=np.int64)
        order = np.arange(len(c2i))[::-1]
        first[c2i[order]] = order  # the last write per image is its lowest caption index
        text = text_all[first[keep]]
    else:
        sums = np.zeros((n_img, text_all.shape[1]), dtype=np.float64)
        np.add.at(sums, c2i, text_all.astype(np.float64))
        text = (sums[keep] / counts[keep, None]).astype(np.float32)
        if normalize:
            text = _normalize(text, "mean text", [emb.image_ids[i] for i in keep])
    return PairedEmbeddings(
        image=image[keep],
        text=text,
        image_ids=[emb.image_ids[i] for i in keep],
        n_skipped=int(missing.size),
        caption=caption,
        normalized=normalize,
    )
