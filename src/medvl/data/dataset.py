"""Torch dataset of paired image–text–label records, its collate function and a file pre-flight.

Modes are explicit (``train=True`` / ``False``):

* **training** — each item carries one caption, chosen from the record's texts by
  ``caption_mode`` (``random``: uniform, drawn from a generator seeded by
  ``(seed, epoch, index)``; ``first``; ``join``: all texts joined). The image transform's
  generator is seeded the same way, so an item looks the same for a given epoch whatever
  the worker count or order. Call :meth:`ImageTextDataset.set_epoch` before each epoch.
* **evaluation** — each item carries all of its captions; the batch lists them flat with
  ``caption_to_image`` (dataset index of each caption's image), and
  :meth:`ImageTextDataset.captions` gives the whole caption list with the same index.
  With ``raw_images=True`` (evaluation only) items carry the decoded image as an 8-bit RGB
  ``PIL.Image`` (:func:`~medvl.data.images.load_rgb8`) instead of a transformed tensor, and the
  batch lists them under ``images``: a published model's own preprocessing runs on them.

Bad records (schema errors from :func:`~medvl.data.manifest.validate_manifest`, files that
fail :func:`preflight`, files that fail to load later) raise an error naming the record and
file with ``on_bad_sample="error"``; with ``"skip"`` they are left out and recorded in
``dataset.skipped`` (id, row, stage, reason). A file that fails only at load time (in a
worker) cannot be removed from the index any more: the item is returned as a skip marker that
:func:`collate` drops and lists under ``batch["skipped"]``. Whoever iterates batches passes them
through :func:`track_skips` (or calls :meth:`ImageTextDataset.note_skipped`), so the dataset in
the main process counts every skipped record exactly once, whatever the number of workers and
epochs. A split whose every record was skipped is an :class:`AllRecordsSkippedError`, never an
empty success.

Batch (see "Batch" in docs/DESIGN.md): ``ids``, ``index`` (B,), ``pixel_values`` (B, C, H, W)
or ``bag`` (B, N, d) + ``bag_mask`` (B, N), ``texts``, ``labels``/``label_mask`` per task, and
``skipped``. Training batches add ``has_text`` (B,) and, when the manifest has per-text labels,
``text_labels`` per task for the chosen caption; evaluation batches add ``caption_to_image``.

Dataset negatives (``negatives=`` / ``data.negatives``): every training item also carries ``k``
negative texts drawn by :class:`~medvl.data.negatives.DatasetNegativeSampler` from records
with a different label and another group (each negative's text chosen by the caption mode);
the batch gets ``negative_texts`` (the drawn texts, flat, record-major), ``negative_index``
(B, k) dataset indices (−1 where a record had none) and ``negative_mask`` (B, k).

**Second view** (SimCLR): with ``view2_transform`` set, every item also carries
``pixel_values_view2`` — the same decoded image through ``view2_transform`` with its own generator,
seeded by ``(seed, epoch, index)`` on a stream independent of the first view's — or, for feature
bags, ``bag_view2`` (a second seeded region subset, ``max_regions`` needed) with ``bag_mask_view2``.
Without it nothing extra is computed or stacked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset

from medvl.data.images import BagLayout, ImageLoadError, load_record, load_rgb8
from medvl.data.manifest import (
    TEXT_LABEL_PREFIX,
    Manifest,
    ManifestError,
    list_column_to_matrix,
    validate_manifest,
)
from medvl.data.negatives import DatasetNegativeSampler
from medvl.data.preflight import FileProblem, preflight

if TYPE_CHECKING:
    from medvl.config.data import DataConfig, NegativeSamplingConfig

__all__ = [
    "AllRecordsSkippedError",
    "FileProblem",
    "ImageTextDataset",
    "SkippedRecord",
    "collate",
    "preflight",
    "select_split",
    "track_skips",
]

OnBadSample = Literal["error", "skip"]
CaptionMode = Literal["random", "first", "join"]


class AllRecordsSkippedError(ManifestError):
    """``on_bad_sample: skip`` left nothing of a split: every record was bad (the message shows why)."""


@dataclass(frozen=True)
class SkippedRecord:
    """A record left out: ``stage`` is ``validation``, ``preflight`` or ``load``."""

    id: str
    row: int
    stage: str
    reason: str


@dataclass(frozen=True)
class _Skipped:
    """Returned by ``__getitem__`` in skip mode when a file fails to load; dropped by :func:`collate`."""

    id: str
    index: int
    reason: str


# ----------------------------------------------------------------------------------------- splits


def select_split(manifest: Manifest, cfg: DataConfig, part: Literal["train", "val", "test"]) -> Manifest:
    """The records for ``part`` under ``cfg``.

    Without ``cfg.fold``: records whose ``split`` is ``cfg.<part>_split``. With ``cfg.fold = k``
    (cross-validation): train = ``train_split`` records with an assigned fold other than k,
    val = ``train_split`` records in fold k; test is unchanged.
    """
    split = manifest.records["split"].fillna("").astype(str).to_numpy(dtype=object)
    folds = manifest.records["fold"].to_numpy()
    if part == "test":
        mask = split == cfg.test_split
    elif cfg.fold is None:
        mask = split == (cfg.train_split if part == "train" else cfg.val_split)
    else:
        in_train = split == cfg.train_split
        if not ((folds == cfg.fold) & in_train).any():
            present = sorted({int(f) for f in folds[in_train] if f >= 0})
            raise ManifestError(f"fold {cfg.fold} has no {cfg.train_split!r} records (folds present: {present})")
        mask = in_train & (folds == cfg.fold) if part == "val" else in_train & (folds >= 0) & (folds != cfg.fold)
    return manifest.subset(np.asarray(mask, dtype=bool))


# ----------------------------------------------------------------------------------------- dataset


def _item_seed(seed: int, epoch: int, index: int, view: int = 1) -> np.random.SeedSequence:
    """Seed of one item's randomness; ``view`` 2 is an independent stream for the second view."""
    keys = [seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, index & 0xFFFFFFFF, 0x6D65]
    return np.random.SeedSequence(keys if view == 1 else [*keys, view])


def _torch_generator(seq: np.random.SeedSequence) -> torch.Generator:
    return torch.Generator().manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0] >> 1))


class ImageTextDataset(Dataset[Any]):
    """Paired image–text–label records of a :class:`Manifest` as tensors.

    Args:
        manifest: the records (``root`` must be set).
        train: training mode (one caption per item, augmentation) or evaluation mode (all captions).
        transform: callable ``(image (C,H,W) in [0,1], generator) -> tensor`` (see
            :func:`medvl.data.transforms.build_transforms`); ``None`` = no transform. Not
            applied to feature bags.
        tasks: tasks whose labels go into items (default: all tasks of the manifest).
        seed: seeds caption choice, augmentation and bag subsampling with (epoch, index).
        caption_mode: training caption choice: ``random``, ``first`` or ``join``.
        caption_separator: separator for ``join``.
        channels: 1 or 3 image channels (grey images are repeated to 3).
        on_bad_sample: ``error`` raises at the first bad record; ``skip`` leaves it out and records it.
        require_texts: a record without any text is bad (off for label-only datasets).
        verify_files: run :func:`preflight` (exists + decodes) at construction.
        dicom_window: ``header`` or ``minmax`` (see :mod:`medvl.data.images`).
        bag_key: array key inside multi-array feature-bag files.
        bag_layout: feature-bag shapes (see :func:`medvl.data.images.load_feature_bag`).
        max_regions: training only: keep at most this many regions per bag (seeded subset).
        preflight_workers: threads for the pre-flight scan.
        negatives: training only: draw negative texts per record from the dataset (see the
            module docstring and :class:`~medvl.config.data.NegativeSamplingConfig`).
        raw_images: evaluation only: items carry the decoded 8-bit RGB ``PIL.Image`` (``image``;
            ``images`` in the batch) for a model that preprocesses images itself; no transform.
        view2_transform: when set, items carry a second, independently augmented view
            (``pixel_values_view2``; ``bag_view2`` for bags) — what SimCLR's objective asks for.
    """

    def __init__(
        self,
        manifest: Manifest,
        *,
        train: bool,
        transform: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None,
        tasks: Sequence[str] | None = None,
        seed: int = 0,
        caption_mode: CaptionMode = "random",
        caption_separator: str = " ",
        channels: int = 3,
        on_bad_sample: OnBadSample = "error",
        require_texts: bool = True,
        verify_files: bool = False,
        dicom_window: Literal["header", "minmax"] = "header",
        bag_key: str | None = None,
        bag_layout: BagLayout = "auto",
        max_regions: int | None = None,
        preflight_workers: int = 1,
        negatives: NegativeSamplingConfig | None = None,
        raw_images: bool = False,
        view2_transform: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None,
    ) -> None:
        if raw_images and (train or transform is not None):
            raise ValueError("raw_images is an evaluation mode (train=False) without a transform")
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        if caption_mode not in ("random", "first", "join"):
            raise ValueError(f"caption_mode must be random, first or join, got {caption_mode!r}")
        if manifest.root is None:
            raise ManifestError("manifest has no root; image paths cannot be resolved")
        self.train = train
        self.raw_images = raw_images
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.caption_mode: CaptionMode = caption_mode
        self.caption_separator = caption_separator
        self.channels = channels
        self.on_bad_sample: OnBadSample = on_bad_sample
        self.dicom_window: Literal["header", "minmax"] = dicom_window
        self.bag_key = bag_key
        self.bag_layout: BagLayout = bag_layout
        self.max_regions = max_regions
        self.negatives_config = negatives if train else None
        self.negative_sampler: DatasetNegativeSampler | None = None
        self.view2_transform = view2_transform
        self.skipped: list[SkippedRecord] = []
        self._load_skipped: set[str] = set()  # ids already recorded at the load stage
        self.task_names = list(manifest.tasks) if tasks is None else list(tasks)
        for name in self.task_names:
            manifest.task(name)  # unknown task → error listing the known ones

        keep = np.ones(len(manifest), dtype=bool)
        report = validate_manifest(manifest, require_texts=require_texts)
        if report.manifest_errors:
            raise ManifestError("manifest-level problems cannot be skipped:\n" + report.format())
        if not report.ok:
            if on_bad_sample == "error":
                report.raise_if_errors()
            ids = manifest.records["id"].to_numpy(dtype=object)
            for row, reasons in sorted(report.reasons_by_row().items()):
                self.skipped.append(SkippedRecord(str(ids[row]), row, "validation", "; ".join(reasons)))
                keep[row] = False
        if verify_files:
            problems = preflight(
                manifest,
                rows=np.flatnonzero(keep),
                dicom_window=dicom_window,
                bag_key=bag_key,
                bag_layout=bag_layout,
                workers=preflight_workers,
            )
            if problems and on_bad_sample == "error":
                lines = [f"  - record {p.id!r}: {p.path}: {p.reason}" for p in problems[:20]]
                more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
                raise ManifestError(f"{len(problems)} record(s) with bad files:\n" + "\n".join(lines) + more)
            for p in problems:
                self.skipped.append(SkippedRecord(p.id, p.row, "preflight", f"{p.path}: {p.reason}"))
                keep[p.row] = False
        self.source_rows = np.flatnonzero(keep)
        self.manifest = manifest.subset(keep) if not keep.all() else manifest
        self._prepare()

    @classmethod
    def from_config(
        cls, manifest: Manifest, cfg: DataConfig, *, train: bool, seed: int, transform: Any = "auto",
        second_view: bool = False,
    ) -> ImageTextDataset:
        """Build with the settings of ``cfg`` (transform from :func:`build_transforms` unless given;
        ``second_view`` adds the view-2 augmentation of :func:`build_view2_transforms`)."""
        from medvl.data.transforms import build_transforms, build_view2_transforms

        return cls(
            manifest,
            train=train,
            transform=build_transforms(cfg, train=train) if transform == "auto" else transform,
            tasks=cfg.tasks,
            seed=seed,
            caption_mode=cfg.caption.mode,
            caption_separator=cfg.caption.separator,
            channels=cfg.channels,
            on_bad_sample=cfg.on_bad_sample,
            require_texts=cfg.require_texts,
            verify_files=cfg.verify_files,
            dicom_window=cfg.dicom_window,
            bag_key=cfg.bag_key,
            bag_layout=cfg.bag_layout,
            max_regions=cfg.max_regions if train else None,
            negatives=cfg.negatives if train else None,
            view2_transform=build_view2_transforms(cfg) if second_view else None,
        )

    def _prepare(self) -> None:
        m = self.manifest
        df = m.records
        self._ids = df["id"].astype(str).to_numpy(dtype=object)
        self._images = df["image"].astype(str).to_numpy(dtype=object)
        self._types = m.image_types()
        kinds = {"feature_bag" if t == "feature_bag" else "image" for t in self._types.tolist()}
        if len(kinds) > 1:
            raise ManifestError("a dataset cannot mix feature bags and images; split the manifest by image_type")
        self.is_bag = kinds == {"feature_bag"}
        texts = pa.array(df["texts"].to_numpy(dtype=object), type=pa.list_(pa.string()), from_pandas=True)
        texts = pc.fill_null(texts, pa.scalar([], type=pa.list_(pa.string())))
        self._text_offsets = np.asarray(texts.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        self._texts_flat = np.asarray(texts.flatten().to_numpy(zero_copy_only=False), dtype=object)
        self._labels: dict[str, np.ndarray] = {}
        self._masks: dict[str, np.ndarray] = {}
        self._text_labels: dict[str, np.ndarray] = {}
        for name in self.task_names:
            spec = m.task(name)
            self._labels[name] = m.label_matrix(name)
            self._masks[name] = m.label_mask(name)
            column = TEXT_LABEL_PREFIX + name
            if column in df.columns:
                self._text_labels[name] = _caption_labels(df[column], spec.num_classes, spec.kind, column)
        if self.negatives_config is not None:
            self.negative_sampler = self._build_negative_sampler(self.negatives_config)

    def _build_negative_sampler(self, cfg: NegativeSamplingConfig) -> DatasetNegativeSampler:
        m = self.manifest
        spec = m.task(cfg.task)  # unknown task → error listing the known ones
        labels, mask = m.label_matrix(cfg.task), m.label_mask(cfg.task)
        if spec.kind in ("multiclass", "ordinal"):
            labels = np.where(mask, labels, -1)
        elif spec.kind == "regression":
            labels = np.where(mask, labels, np.nan)
        has_text = np.diff(self._text_offsets) > 0
        return DatasetNegativeSampler(
            labels,
            spec.kind,
            m.records["group"].astype(str).to_numpy(dtype=object) if "group" in m.records.columns else None,
            k=cfg.k,
            seed=self.seed,
            label_mask=mask if spec.kind == "multilabel" else None,
            exclude_same_group=cfg.exclude_same_group,
            min_label_distance=cfg.min_label_distance,
            eligible=has_text,
        )

    def records_without_negative(self) -> list[str]:
        """Ids of records for which the dataset negative sampler finds no admissible negative."""
        if self.negative_sampler is None:
            return []
        return [str(self._ids[i]) for i in self.negative_sampler.missing.tolist()]

    # ---- public API
    def __len__(self) -> int:
        return len(self._ids)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds caption choice and augmentation (call before iterating)."""
        self.epoch = int(epoch)

    @property
    def ids(self) -> list[str]:
        """Record ids in dataset order."""
        return [str(i) for i in self._ids]

    def texts_of(self, index: int) -> list[str]:
        """All texts of item ``index``."""
        lo, hi = self._text_offsets[index], self._text_offsets[index + 1]
        return [str(t) for t in self._texts_flat[lo:hi]]

    def captions(self) -> tuple[list[str], np.ndarray]:
        """Every caption in dataset order and ``caption_to_image`` (int64, dataset index of its image)."""
        counts = np.diff(self._text_offsets)
        return [str(t) for t in self._texts_flat], np.repeat(np.arange(len(self), dtype=np.int64), counts)

    def caption_labels(self, task: str) -> np.ndarray | None:
        """Per-caption labels of ``task`` aligned with :meth:`captions` (None when the manifest has none)."""
        return self._text_labels.get(task)

    def labels(self, task: str) -> np.ndarray:
        """Per-item labels of ``task`` (see :meth:`Manifest.label_matrix`)."""
        return self._labels[task]

    def label_masks(self, task: str) -> np.ndarray:
        """Per-item label masks of ``task`` (see :meth:`Manifest.label_mask`)."""
        return self._masks[task]

    def note_skipped(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Record load-time skips reported by a batch (``batch["skipped"]``), once per record.

        Batches built in worker processes carry the skips the workers' copies of the dataset saw;
        noting them here (the main process) makes :meth:`skip_report` exact with any worker count.
        """
        for entry in entries:
            rid = str(entry["id"])
            if rid in self._load_skipped:
                continue
            self._load_skipped.add(rid)
            index = int(entry["index"])
            row = int(self.source_rows[index]) if 0 <= index < len(self.source_rows) else -1
            self.skipped.append(SkippedRecord(rid, row, "load", str(entry["reason"])))

    def share_skips(self, other: ImageTextDataset) -> None:
        """Make ``other`` — a second view of the same records (e.g. the validation loss's) — record its
        skips in this dataset's record, so the split's skips are counted once across both."""
        known = {(s.id, s.stage) for s in self.skipped}
        self.skipped.extend(s for s in other.skipped if (s.id, s.stage) not in known)
        self._load_skipped |= other._load_skipped
        other.skipped, other._load_skipped = self.skipped, self._load_skipped

    @property
    def n_source_records(self) -> int:
        """Records of the manifest this dataset was built from (before any skip)."""
        return len(self.source_rows) + sum(1 for s in self.skipped if s.stage != "load")

    def check_not_all_skipped(self, what: str = "dataset") -> None:
        """Raise :class:`AllRecordsSkippedError` when every record of ``what`` was skipped."""
        total = self.n_source_records
        if total == 0 or len(self) > len(self._load_skipped):
            return
        reasons = "\n".join(f"  - record {s.id!r} ({s.stage}): {s.reason}" for s in self.skipped[:10])
        more = f"\n  … and {len(self.skipped) - 10} more" if len(self.skipped) > 10 else ""
        raise AllRecordsSkippedError(
            f"on_bad_sample: skip skipped every one of the {total} records of the {what}:\n{reasons}{more}"
        )

    def skip_report(self) -> dict[str, Any]:
        """Counts and details of skipped records, by stage (for results files)."""
        by_stage: dict[str, int] = {}
        for s in self.skipped:
            by_stage[s.stage] = by_stage.get(s.stage, 0) + 1
        return {"n_skipped": len(self.skipped), "by_stage": by_stage, "records": [asdict(s) for s in self.skipped]}

    # ---- items
    def __getitem__(self, index: int) -> dict[str, Any] | _Skipped:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for dataset of {len(self)}")
        rid = str(self._ids[index])
        seq = _item_seed(self.seed, self.epoch, index)
        rng = np.random.default_rng(seq)
        torch_gen = _torch_generator(seq)
        path = self.manifest.resolve_path(str(self._images[index]))
        try:
            if self.raw_images and not self.is_bag:
                return self._raw_item(index, rid, path)
            data = load_record(
                path,
                str(self._types[index]),
                rid,
                channels=self.channels,
                dicom_window=self.dicom_window,
                bag_key=self.bag_key,
                bag_layout=self.bag_layout,
            )
        except ImageLoadError as exc:
            if self.on_bad_sample == "error":
                raise
            marker = _Skipped(rid, index, f"{path}: {exc.reason}")
            self.note_skipped([asdict(marker)])
            return marker
        item: dict[str, Any] = {"id": rid, "index": index}
        if self.is_bag:
            if self.view2_transform is not None:
                item["bag_view2"] = self._bag_view2(data, index)
            item["bag"] = self._subsample(data, rng)
        else:
            item["pixel_values"] = self.transform(data, torch_gen) if self.transform is not None else data
            if self.view2_transform is not None:
                gen2 = _torch_generator(_item_seed(self.seed, self.epoch, index, view=2))
                item["pixel_values_view2"] = self.view2_transform(data, gen2)
        texts = self.texts_of(index)
        if self.train:
            text, text_index = self._choose_caption(texts, rng)
            item["text"] = text
            item["text_index"] = text_index
            if self.negative_sampler is not None:
                item["negatives"] = self._draw_negatives(index)
            if self._text_labels and text_index >= 0:
                offset = int(self._text_offsets[index]) + text_index
                item["text_labels"] = {k: torch.as_tensor(v[offset]) for k, v in self._text_labels.items()}
        else:
            item["texts"] = texts
        item["labels"] = {k: torch.as_tensor(v[index]) for k, v in self._labels.items()}
        item["label_mask"] = {k: torch.as_tensor(v[index]) for k, v in self._masks.items()}
        return item

    def _draw_negatives(self, index: int) -> tuple[list[int], list[str]]:
        """Dataset indices and texts of item ``index``'s negatives in the current epoch."""
        assert self.negative_sampler is not None
        chosen = self.negative_sampler.draw(index, self.epoch).tolist()
        rng = np.random.default_rng(np.random.SeedSequence(
            [self.seed & 0xFFFFFFFF, self.epoch & 0xFFFFFFFF, index & 0xFFFFFFFF, 0x6E7478]))
        texts = [self._choose_caption(self.texts_of(j), rng)[0] for j in chosen]
        return chosen, texts

    def _raw_item(self, index: int, rid: str, path: Path) -> dict[str, Any]:
        item: dict[str, Any] = {"id": rid, "index": index,
                                "image": load_rgb8(path, str(self._types[index]), rid, dicom_window=self.dicom_window),
                                "texts": self.texts_of(index)}
        item["labels"] = {k: torch.as_tensor(v[index]) for k, v in self._labels.items()}
        item["label_mask"] = {k: torch.as_tensor(v[index]) for k, v in self._masks.items()}
        return item

    def _subsample(self, bag: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.train and self.max_regions is not None and bag.shape[0] > self.max_regions:
            chosen = np.sort(rng.choice(bag.shape[0], size=self.max_regions, replace=False))
            return bag[torch.from_numpy(chosen)]
        return bag

    def _bag_view2(self, bag: torch.Tensor, index: int) -> torch.Tensor:
        if self.max_regions is None:
            raise ManifestError(
                "a second view of a feature bag is a second random region subset: set data.max_regions"
            )
        rng2 = np.random.default_rng(_item_seed(self.seed, self.epoch, index, view=2))
        chosen = np.sort(rng2.choice(bag.shape[0], size=min(self.max_regions, bag.shape[0]), replace=False))
        return bag[torch.from_numpy(chosen)]

    def _choose_caption(self, texts: list[str], rng: np.random.Generator) -> tuple[str, int]:
        if not texts:
            return "", -1
        if self.caption_mode == "first":
            return texts[0], 0
        if self.caption_mode == "join":
            return self.caption_separator.join(texts), -1
        k = int(rng.integers(len(texts)))
        return texts[k], k


def _caption_labels(column: Any, width: int, kind: str, name: str) -> np.ndarray:
    """Flatten ``text_labels.<task>`` to one row per caption (multilabel (N_txt, C), else (N_txt,))."""
    arr = pa.array(column.to_numpy(dtype=object), from_pandas=True)
    flat = arr.flatten() if len(arr) else pa.array([], type=pa.list_(pa.float64()))
    if kind == "multilabel":
        matrix, _ = list_column_to_matrix(flat, width, np.float32, name)
        return matrix
    values = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float64)
    if kind == "regression":
        return values.astype(np.float32)
    return np.where(np.isnan(values), -1, values).astype(np.int64)


def track_skips(batches: Iterable[dict[str, Any]], dataset: Any) -> Iterator[dict[str, Any]]:
    """Yield ``batches`` unchanged, noting each batch's ``skipped`` records in ``dataset`` (main process)."""
    note = getattr(dataset, "note_skipped", None)
    for batch in batches:
        if note is not None and batch.get("skipped"):
            note(batch["skipped"])
        yield batch


# ----------------------------------------------------------------------------------------- collate


def _collate_bags(bags: Sequence[torch.Tensor], ids: list[str]) -> dict[str, torch.Tensor]:
    """Pad bags to ``bag`` (B, N, d) or (B, M, T, d) with ``bag_mask`` (B, M); region-token bags
    whose token counts differ also get ``token_mask`` (B, M, T)."""
    ranks = {b.ndim for b in bags}
    if len(ranks) > 1:
        raise ValueError(f"flat (n, d) and region-token (M, T, d) bags in one batch: ids {ids}")
    dims = {b.shape[-1] for b in bags}
    if len(dims) > 1:
        raise ValueError(f"feature bags of different widths {sorted(dims)} in one batch: ids {ids}")
    longest = max(b.shape[0] for b in bags)
    tokens = max(b.shape[1] for b in bags) if bags[0].ndim == 3 else None
    inner = (bags[0].shape[-1],) if tokens is None else (tokens, bags[0].shape[-1])
    out = torch.zeros(len(bags), longest, *inner, dtype=bags[0].dtype)
    mask = torch.zeros(len(bags), longest, dtype=torch.bool)
    for i, b in enumerate(bags):
        if tokens is None:
            out[i, : b.shape[0]] = b
        else:
            out[i, : b.shape[0], : b.shape[1]] = b
        mask[i, : b.shape[0]] = True
    result = {"bag": out, "bag_mask": mask}
    if tokens is not None and len({b.shape[1] for b in bags}) > 1:
        token_mask = torch.zeros(len(bags), longest, tokens, dtype=torch.bool)
        for i, b in enumerate(bags):
            token_mask[i, : b.shape[0], : b.shape[1]] = True
        result["token_mask"] = token_mask
    return result


def _collate_negatives(drawn: Sequence[tuple[list[int], list[str]]]) -> dict[str, Any]:
    """``negative_texts`` (flat, record-major), ``negative_index`` (B, k) (−1 = none), ``negative_mask``."""
    k = max((len(indices) for indices, _ in drawn), default=0)
    index = torch.full((len(drawn), k), -1, dtype=torch.long)
    texts: list[str] = []
    for row, (indices, row_texts) in enumerate(drawn):
        index[row, : len(indices)] = torch.tensor(indices, dtype=torch.long)
        texts.extend(row_texts)
    return {"negative_texts": texts, "negative_index": index, "negative_mask": index >= 0}


def _stack_images(items: list[dict[str, Any]], key: str) -> torch.Tensor:
    shapes = {tuple(it[key].shape) for it in items}
    if len(shapes) > 1:
        detail = ", ".join(f"{it['id']}: {tuple(it[key].shape)}" for it in items[:8])
        raise ValueError(f"images of different shapes cannot be stacked ({detail}); add a resize/crop transform")
    return torch.stack([it[key] for it in items])


def collate(samples: Sequence[dict[str, Any] | _Skipped]) -> dict[str, Any]:
    """Stack items into a batch (see the module docstring); skip markers go to ``batch["skipped"]``.

    Images must share one shape (use a transform with a fixed crop); feature bags are padded
    to the longest bag with ``bag_mask`` marking real regions.
    """
    skipped = [{"id": s.id, "index": s.index, "reason": s.reason} for s in samples if isinstance(s, _Skipped)]
    items = [s for s in samples if not isinstance(s, _Skipped)]
    batch: dict[str, Any] = {
        "ids": [it["id"] for it in items],
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "skipped": skipped,
    }
    if not items:
        batch["texts"] = []
        batch["labels"] = {}
        batch["label_mask"] = {}
        return batch
    if "bag" in items[0]:
        batch.update(_collate_bags([it["bag"] for it in items], batch["ids"]))
        if "bag_view2" in items[0]:
            view2 = _collate_bags([it["bag_view2"] for it in items], batch["ids"])
            batch.update({f"{key}_view2": value for key, value in view2.items()})
    elif "image" in items[0]:  # raw decoded images (evaluation with raw_images=True)
        batch["images"] = [it["image"] for it in items]
    else:
        batch["pixel_values"] = _stack_images(items, "pixel_values")
        if "pixel_values_view2" in items[0]:
            batch["pixel_values_view2"] = _stack_images(items, "pixel_values_view2")
    if "text" in items[0]:
        batch["texts"] = [it["text"] for it in items]
        batch["text_index"] = torch.tensor([it["text_index"] for it in items], dtype=torch.long)
        batch["has_text"] = torch.tensor([bool(it["text"]) for it in items], dtype=torch.bool)
        if all("text_labels" in it for it in items):
            batch["text_labels"] = {k: torch.stack([it["text_labels"][k] for it in items]) for k in items[0]["text_labels"]}
        if "negatives" in items[0]:
            batch.update(_collate_negatives([it["negatives"] for it in items]))
    else:
        texts: list[str] = []
        owners: list[int] = []
        for it in items:
            texts.extend(it["texts"])
            owners.extend([it["index"]] * len(it["texts"]))
        batch["texts"] = texts
        batch["caption_to_image"] = torch.tensor(owners, dtype=torch.long)
    batch["labels"] = {k: torch.stack([it["labels"][k] for it in items]) for k in items[0]["labels"]}
    batch["label_mask"] = {k: torch.stack([it["label_mask"][k] for it in items]) for k in items[0]["label_mask"]}
    return batch
