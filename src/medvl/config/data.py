"""Configuration schemas of the data layer (manifest, image loading, transforms, captions, splits).

Batch size and loader workers belong to ``training`` (:class:`medvl.config.training.TrainConfig`);
the seed is the run's top-level ``seed``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from medvl.config.base import ConfigPath, StrictModel

__all__ = [
    "CaptionConfig",
    "DataConfig",
    "EvalTransformConfig",
    "NegativeSamplingConfig",
    "SplitConfig",
    "TrainTransformConfig",
]


class TrainTransformConfig(StrictModel):
    """Training augmentation (applied to [0, 1] images before normalisation)."""

    crop: Literal["random_resized", "center"] = "random_resized"
    #: area fraction range of the random-resized crop
    scale: tuple[float, float] = (0.7, 1.0)
    #: aspect-ratio range (w/h) of the random-resized crop
    ratio: tuple[float, float] = (0.75, 4 / 3)
    #: shorter side before a centre crop (``crop: center``); null = ``image_size``
    resize: int | None = Field(default=None, gt=0)
    rotation_degrees: float = Field(default=5.0, ge=0, le=45)
    #: probability of a left–right flip; 0 by default because it swaps anatomical laterality
    hflip_p: float = Field(default=0.0, ge=0, le=1)
    brightness: float = Field(default=0.1, ge=0, lt=1)
    contrast: float = Field(default=0.1, ge=0, lt=1)

    @field_validator("scale")
    @classmethod
    def _scale_ok(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1] <= 1):
            raise ValueError("scale must satisfy 0 < low <= high <= 1")
        return v

    @field_validator("ratio")
    @classmethod
    def _ratio_ok(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1]):
            raise ValueError("ratio must satisfy 0 < low <= high")
        return v


class EvalTransformConfig(StrictModel):
    """Deterministic evaluation preprocessing: resize the shorter side, centre crop ``image_size``."""

    crop: Literal["center"] = "center"
    #: shorter side before the centre crop; null = ``image_size`` (no border cropped on square images)
    resize: int | None = Field(default=None, gt=0)


class CaptionConfig(StrictModel):
    """How a training item picks its text.

    ``random``: one caption, uniform, seeded by (seed, epoch, index); ``first``: always the
    first; ``join``: all captions joined with ``separator`` (a whole report from sentences).
    Evaluation always exposes every caption.
    """

    mode: Literal["random", "first", "join"] = "random"
    separator: str = " "


class NegativeSamplingConfig(StrictModel):
    """Negative texts drawn from the dataset for every training record (``data.negatives``).

    For each record, ``k`` other records are drawn uniformly (without replacement while enough
    exist) among those whose ``task`` label *differs* from the record's and, with
    ``exclude_same_group``, whose group (patient) differs; their texts (chosen by the caption
    mode) become the record's negatives. "Differs" by task kind: multiclass/ordinal — another
    class (both labelled); multilabel — the label vectors disagree on at least one class
    annotated in both records; regression — ``|y_i − y_j| > min_label_distance``. Draws are
    seeded by (seed, epoch, index), so a record's negatives change every epoch and are the
    same on every rerun, whatever the worker count. This is the Balancing Act's sampler (a
    random report of a different ISUP grade), which makes triplet and contrastive terms work
    at batch size 1. Objective terms read them with ``negatives: dataset``.
    """

    task: str = Field(min_length=1)
    k: int = Field(default=1, ge=1, le=1024)
    exclude_same_group: bool = True
    #: regression tasks: labels closer than this count as the same label
    min_label_distance: float = Field(default=0.0, ge=0.0)


class SplitConfig(StrictModel):
    """How ``medvl data split`` assigns ``split`` / ``fold`` (grouped, stratified, seeded)."""

    folds: int = Field(default=5, ge=0)
    test_fraction: float = Field(default=0.2, ge=0, lt=1)
    val_fraction: float = Field(default=0.0, ge=0, lt=1)
    #: task whose labels are stratified on (null = balance group sizes only)
    task: str | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.test_fraction + self.val_fraction >= 1:
            raise ValueError("test_fraction + val_fraction must be < 1")
        if self.folds == 1:
            raise ValueError("folds must be 0 (no cross-validation) or >= 2")
        return self


class DataConfig(StrictModel):
    """Where the data is and how records become tensors.

    ``mean``/``std`` apply after images are scaled to [0, 1]; give one value per channel or a
    single value for all. The default (0.5, 0.5) maps [0, 1] to [−1, 1]; pretrained towers
    usually need their own statistics (e.g. ImageNet's).
    """

    #: the manifest file; a relative path in a config file is relative to that file's directory
    manifest: ConfigPath
    #: directory image paths are relative to; null = the manifest's stored root / its directory
    #: (relative paths: as for ``manifest``)
    root: ConfigPath | None = None
    on_bad_sample: Literal["error", "skip"] = "error"
    #: every record must have at least one non-empty text (false for label-only datasets)
    require_texts: bool = True
    #: scan every file (exists, decodes) before training/evaluation
    verify_files: bool = False
    image_size: int = Field(default=224, gt=0)
    channels: Literal[1, 3] = 3
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    #: DICOM: use the header's VOI window (fallback min–max) or always min–max
    dicom_window: Literal["header", "minmax"] = "header"
    #: key of the array inside multi-array feature-bag files (null = features/feats/… or the only one)
    bag_key: str | None = None
    #: feature-bag shape: flat (n, d); regions (M, T, d) region tokens or (M, d) region features;
    #: auto = 3-D with a leading axis of 1 is a flat bag, other 3-D arrays are region tokens
    bag_layout: Literal["auto", "flat", "regions"] = "auto"
    #: how medvl recognises changed image files (``--resume`` checks, embedding caches): ``stat`` = size and
    #: modification time of every file (cheap), ``content`` = sha256 of every file's bytes (exact, reads all)
    file_fingerprint: Literal["stat", "content"] = "stat"
    #: training: keep at most this many regions of a feature bag (random subset, seeded); null = all
    max_regions: int | None = Field(default=None, gt=0)
    #: tasks whose labels go into batches (null = every task in the manifest)
    tasks: list[str] | None = None
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    train_transforms: TrainTransformConfig = Field(default_factory=TrainTransformConfig)
    #: augmentation of the second view that SimCLR-style objectives ask for (``pixel_values_view2``);
    #: null = a second, independent draw of ``train_transforms``. Only used when a term needs it.
    view2_transforms: TrainTransformConfig | None = None
    eval_transforms: EvalTransformConfig = Field(default_factory=EvalTransformConfig)
    caption: CaptionConfig = Field(default_factory=CaptionConfig)
    #: cross-validation: train on ``train_split`` records of the other folds, validate on this
    #: fold (null = validate on ``val_split``)
    fold: int | None = Field(default=None, ge=0)
    #: negative texts drawn from the dataset per record (null = none; terms use in-batch negatives)
    negatives: NegativeSamplingConfig | None = None

    @model_validator(mode="after")
    def _stats(self) -> DataConfig:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) not in (1, self.channels):
                raise ValueError(f"{name} needs 1 or {self.channels} values (channels), got {len(values)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        for name in ("train_split", "val_split", "test_split"):
            if getattr(self, name) not in ("train", "val", "test"):
                raise ValueError(f"{name} must be one of train, val, test")
        return self
