"""Configuration of the evaluation suite (``medvl evaluate`` and the trainer's per-epoch hooks).

Every option of every task lives here with its default; results files record the resolved
values. See ``docs/evaluation.md`` for what each option means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from medvl.config.base import StrictModel

__all__ = [
    "CLIP_C_GRID",
    "CaptioningOptions",
    "ClassificationOptions",
    "EvaluationConfig",
    "ProbeOptions",
    "RetrievalOptions",
    "VQAOptions",
    "ValidationOptions",
    "ZeroShotOptions",
]

TaskName = Literal["retrieval", "classification", "zeroshot", "probe", "captioning", "vqa"]

#: The CLIP paper's linear-probe sweep (Radford et al. 2021, appendix A.3): 96 log-spaced values
#: of the inverse L2 strength C from 1e-6 to 1e6.
CLIP_C_GRID: tuple[float, ...] = tuple(10.0 ** (-6.0 + 12.0 * i / 95) for i in range(96))


class RetrievalOptions(StrictModel):
    """Image→text / text→image retrieval (see :mod:`medvl.evaluation.retrieval`)."""

    ks: list[int] = Field(default=[1, 5, 10])
    directions: list[Literal["i2t", "t2i"]] = Field(default=["i2t", "t2i"])
    normalize: bool = True
    #: label tasks for label-aware precision@K and retrieval κ (empty = none)
    label_tasks: list[str] = Field(default_factory=list)
    precision_ks: list[int] = Field(default=[1, 5, 10])
    multilabel_relevance: Literal["exact", "overlap"] = "exact"
    #: remove the query's own paired items from the gallery for the label-aware metrics
    exclude_own: bool = False
    #: memory bound of one similarity chunk
    max_chunk_mb: int = Field(default=256, gt=0)

    @field_validator("ks", "precision_ks")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v):
            raise ValueError("every K must be >= 1")
        return v


class ClassificationOptions(StrictModel):
    """Metrics of the model's classifier heads (see :mod:`medvl.evaluation.classification`)."""

    #: tasks to evaluate (null = every task with a head)
    tasks: list[str] | None = None
    threshold: float = Field(default=0.5, gt=0, lt=1)


class ZeroShotOptions(StrictModel):
    """Zero-shot classification from prompt files (see :mod:`medvl.evaluation.zeroshot`)."""

    #: task name -> prompt file path or built-in set name (``synthetic_findings``, ``chexpert``)
    prompts: dict[str, str] = Field(default_factory=dict)
    mode: Literal["text", "prototypes", "hybrid"] = "text"
    #: task name -> class map (path or built-in name, ``class_maps/``) scoring each class of the task by
    #: the mean of the mapped pretraining prototypes (prototypes / hybrid modes; DLILP's COVID protocol)
    class_maps: dict[str, str] = Field(default_factory=dict)
    subsets: list[Literal["all", "base", "novel"]] = Field(default=["all", "base", "novel"])
    #: scale of the cosine similarities; null = the model's learnt logit scale (100 for HF models without one)
    logit_scale: float | None = 100.0
    #: use negative templates (``no {}``) for multilabel tasks when the prompt file has them
    use_negative_prompts: bool = False
    #: a class without a prompt entry is prompted by its own name instead of raising
    fallback_to_class_name: bool = False
    threshold: float = Field(default=0.5, gt=0, lt=1)


class ProbeOptions(StrictModel):
    """Few-shot linear probe (see :mod:`medvl.evaluation.probe`)."""

    #: tasks to probe (null = every multiclass, ordinal and multilabel task of the data; the printed
    #: table and results name each one: ``<task>/<K>shot/<metric>``)
    tasks: list[str] | None = None
    shots: list[int | Literal["all"]] = Field(default=[1, 2, 4, 8, 16, "all"])
    seeds: list[int] = Field(default=[0, 1, 2, 3, 4])
    features: Literal["backbone", "projected"] = "backbone"
    normalize: bool = False
    c_mode: Literal["search", "fixed"] = "search"
    #: C values searched (default: the CLIP paper's 96 values, 1e-6…1e6); all solved in one batch
    c_grid: list[float] = Field(default_factory=lambda: list(CLIP_C_GRID))
    #: extra log-spaced values between the best C's grid neighbours (a coarse-to-fine second round)
    refine_points: int = Field(default=0, ge=0)
    #: C of the fixed protocol (DLILP: 0.316 with class balancing)
    c_fixed: float = Field(default=0.316, gt=0)
    #: validation for the C search: "auto" = the manifest's val split when it has one, else a
    #: held-out val_fraction of the train pool (said in the notes); "val_split" (an error without
    #: one); "train_fraction"
    validation: Literal["auto", "val_split", "train_fraction"] = "auto"
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    class_balance: bool = False
    max_iter: int = Field(default=1000, gt=0)
    tol: float = Field(default=1e-4, gt=0)
    #: solve the C grid along the path, each C warm-started from solved neighbours (as scikit-learn's
    #: warm_start=True over increasing C); false = every C from a cold start
    warm_start: bool = True
    #: float64 state with float32 matrix products ("mixed", ~3× faster on large sets), all float64,
    #: or all float32 (stops earlier: its relative-decrease test is float32's)
    solver_dtype: Literal["mixed", "float64", "float32"] = "mixed"

    @field_validator("shots")
    @classmethod
    def _shots(cls, v: list[int | str]) -> list[int | str]:
        if not v or any(isinstance(k, int) and k < 1 for k in v):
            raise ValueError("shots must be a non-empty list of positive ints or 'all'")
        return v


class CaptioningOptions(StrictModel):
    """Caption / report generation by a model with a decoder (see :mod:`medvl.evaluation.captioning`)."""

    method: Literal["greedy", "beam", "sample"] = "beam"
    num_beams: int = Field(default=3, ge=1)
    #: longest generated caption in tokens (null = the decoder's max_length)
    max_length: int | None = Field(default=None, ge=2)
    length_penalty: float = 1.0
    temperature: float = Field(default=1.0, gt=0)
    top_k: int | None = Field(default=None, ge=1)
    #: forbid repeating any n-gram of this length in a caption (0 = off); stops "no effusion. no effusion."
    no_repeat_ngram: int = Field(default=3, ge=0)
    #: seeds ``sample`` generation
    seed: int = 0
    #: reference text: a manifest column (e.g. ``report``); null = the record's texts joined by spaces
    reference_column: str | None = None
    #: keep only these report sections of the reference when it has section headers (e.g. [findings])
    sections: list[str] | None = None
    #: multilabel task whose image labels are the clinical-efficacy truth; null = the first multilabel
    #: task whose classes all map to CheXpert observations, else the labeller's reading of the references
    ce_task: str | None = None
    #: count hedged ("possible …") mentions in generated text as positive
    uncertain_positive: bool = False
    #: seeded permutations for the shuffled-images CE baseline (the generated texts scored against other
    #: records' truth: what the same report distribution earns without looking at the image); 0 = off
    ce_shuffles: int = Field(default=20, ge=0)
    #: generated/reference pairs stored in the results for inspection
    n_examples: int = Field(default=10, ge=0)
    batch_size: int = Field(default=32, gt=0)


class VQAOptions(StrictModel):
    """VQA as classification over the training answers (see :mod:`medvl.evaluation.vqa`)."""

    #: manifest of VQA records (question/answer columns); null = the evaluated manifest
    manifest: Path | None = None
    #: ``frozen``: train only the fusion head on fixed embeddings; ``finetune``: the medvl model's
    #: towers train with it (at ``encoder_lr``)
    mode: Literal["frozen", "finetune"] = "frozen"
    #: L2-normalise image and question embeddings
    normalize: bool = True
    #: then z-score each dimension with the training questions' statistics
    standardize: bool = True
    hidden_dim: int = Field(default=256, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    epochs: int = Field(default=30, gt=0)
    batch_size: int = Field(default=64, gt=0)
    lr: float = Field(default=1e-3, gt=0)
    encoder_lr: float = Field(default=1e-5, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    seed: int = 0
    #: split the head is trained on (evaluated on ``EvaluationConfig.split``)
    train_split: Literal["train", "val", "test"] = "train"


class ValidationOptions(StrictModel):
    """What the trainer's per-epoch validation hook computes on the val split."""

    tasks: list[Literal["retrieval", "classification"]] = Field(default=["retrieval", "classification"])
    batch_size: int | None = Field(default=None, gt=0)


class EvaluationConfig(StrictModel):
    """``medvl evaluate`` settings (also the ``evaluation`` section of a training config)."""

    tasks: list[TaskName] = Field(default=["retrieval", "classification", "zeroshot", "probe"])
    #: split evaluated (the probe also uses ``train`` and, for the C search, ``val``)
    split: Literal["train", "val", "test"] = "test"
    batch_size: int = Field(default=64, gt=0)
    num_workers: int = Field(default=0, ge=0)
    #: auto (CUDA, else MPS, else CPU — as ``training.accelerator: auto``), cpu, cuda, cuda:N or mps
    device: str = "auto"
    #: embedding cache directory (keyed by model, data and transform hashes); null = no cache
    cache_dir: Path | None = None
    #: progress bars on stderr
    progress: bool = True
    #: classes balanced accuracy (ACA) averages over, in every task: "present" (classes with a true
    #: sample in the split; scikit-learn's balanced_accuracy_score) or "all" (all C, absent = 0)
    balanced_accuracy_over: Literal["present", "all"] = "present"
    #: data settings (``DataConfig`` keys: image_size, channels, mean, std, eval_transforms, tasks, …)
    #: overriding the evaluated run's own data section (or the defaults for a bare model directory)
    data: dict[str, Any] = Field(default_factory=dict)
    retrieval: RetrievalOptions = Field(default_factory=RetrievalOptions)
    classification: ClassificationOptions = Field(default_factory=ClassificationOptions)
    zeroshot: ZeroShotOptions = Field(default_factory=ZeroShotOptions)
    probe: ProbeOptions = Field(default_factory=ProbeOptions)
    captioning: CaptioningOptions = Field(default_factory=CaptioningOptions)
    vqa: VQAOptions = Field(default_factory=VQAOptions)
    validation: ValidationOptions = Field(default_factory=ValidationOptions)
