"""Schemas for alignment diagnostics: ``medvl align`` options and ``medvl align study CONFIG``.

A study lists (model × dataset) entries, each with a saved EmbeddingSet directory
(``embeddings``) or an extraction spec (``extract``), computes every alignment metric and
retrieval per entry, then correlates metrics with retrieval targets and compares domains.

Example::

    output_dir: runs/align_study
    domains: {coco: natural, flickr30k: natural, roco: medical, mimic_cxr: medical}
    entries:
      - {model: clip-base, dataset: coco, embeddings: emb/clip-base/coco}
      - {model: clip-base, dataset: roco, embeddings: emb/clip-base/roco}
      - {model: plip, dataset: roco, embeddings: emb/plip/roco, group: benchmark}
      - model: my-run
        dataset: roco
        extract: {checkpoint: runs/my_run, manifest: data/roco/manifest.parquet, split: test}
    metrics: {metrics: all, topq: 0.1}
    correlation: {methods: [spearman, kendall, pearson], bootstrap_resamples: 1000, seed: 0}

Relative ``embeddings`` / ``extract`` paths are resolved against the directory of the config file.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from medvl.config.base import StrictModel

__all__ = [
    "RETRIEVAL_TARGETS",
    "AlignmentMetricsConfig",
    "AlignmentStudyConfig",
    "CorrelationConfig",
    "ExtractSpec",
    "StudyEntry",
]

#: Retrieval columns a study can correlate metrics with (percentages; rSum = Σ_k 100·R@k).
RETRIEVAL_TARGETS: tuple[str, ...] = (
    "rsum", "rsum_it", "rsum_ti", "r1_it", "r5_it", "r10_it", "r1_ti", "r5_ti", "r10_ti",
)


CorrelationMethod = Literal["spearman", "kendall", "pearson"]


class AlignmentMetricsConfig(StrictModel):
    """Which metrics and with which options (defaults are the SAS paper's where it has one)."""

    metrics: list[str] = Field(default_factory=lambda: ["all"], min_length=1)
    topq: float = Field(default=0.1, gt=0.0, le=1.0)
    eps: float = Field(default=1e-8, ge=0.0)
    knn_k: int = Field(default=10, ge=1)
    svcca_dims: int = Field(default=10, ge=1)
    mmd_sigma: float | None = Field(default=None, gt=0.0)
    rbf_threshold: float = Field(default=1.0, gt=0.0)
    #: rows for median bandwidths: null = exact whenever the distinct distances fit in 512 MiB
    #: (n ≤ 16384 float32 rows; else a seeded subsample of the largest size that fits); an int caps further
    median_max_rows: int | None = Field(default=None, ge=2)
    memory_budget_gb: float = Field(default=1.0, gt=0.0)
    caption: Literal["first", "mean"] = "first"
    normalize: bool = True
    on_missing_caption: Literal["error", "skip"] = "error"
    sweep_topqs: list[float] = Field(default_factory=lambda: [round(i * 0.1, 1) for i in range(1, 11)])
    seed: int = 0

    @field_validator("sweep_topqs")
    @classmethod
    def _topqs_in_range(cls, values: list[float]) -> list[float]:
        for q in values:
            if not 0.0 < q <= 1.0:
                raise ValueError(f"every topq must be in (0, 1], got {q}")
        return values


class ExtractSpec(StrictModel):
    """Extract an entry's embeddings with ``medvl.evaluation.extraction`` (as ``medvl evaluate`` does).

    ``model`` is any spec of the model front door (``medvl.models.loading.load_model``: a medvl
    run/model directory, a Hugging Face, open_clip or timm directory, an ``hf-hub:`` id);
    ``checkpoint``/``hf_model`` are its older aliases. ``trust_remote_code`` lets a Hugging Face
    directory's own code run. ``manifest`` and local model paths are resolved against the config
    file's directory.
    """

    manifest: str
    model: str | None = None
    checkpoint: str | None = None
    hf_model: str | None = None
    trust_remote_code: bool = False
    which: str = "best"
    split: Literal["train", "val", "test"] = "test"
    root: str | None = None
    batch_size: int = Field(default=64, gt=0)
    num_workers: int = Field(default=0, ge=0)
    device: str = "auto"  # as medvl evaluate: CUDA, else MPS, else CPU
    cache_dir: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    progress: bool = False

    @model_validator(mode="after")
    def _one_model(self) -> ExtractSpec:
        if sum(x is not None for x in (self.model, self.checkpoint, self.hf_model)) != 1:
            raise ValueError("give exactly one of 'model' (any model spec; 'checkpoint' and 'hf_model' are aliases)")
        return self

    @property
    def model_spec(self) -> str:
        """The one model spec given (``model``, ``checkpoint`` or ``hf_model``)."""
        spec = self.model or self.checkpoint or self.hf_model
        assert spec is not None
        return spec


class StudyEntry(StrictModel):
    """One (model, dataset) cell: where its embeddings come from and which domain it belongs to."""

    model: str = Field(min_length=1)
    dataset: str = Field(min_length=1)
    embeddings: str | None = None
    extract: ExtractSpec | None = None
    domain: str | None = None
    group: str = "main"

    @model_validator(mode="after")
    def _one_source(self) -> StudyEntry:
        if (self.embeddings is None) == (self.extract is None):
            raise ValueError(
                f"entry {self.model}/{self.dataset}: give exactly one of 'embeddings' (an EmbeddingSet directory "
                "or .npz file) "
                "or 'extract' (an extraction spec)"
            )
        return self


class CorrelationConfig(StrictModel):
    """Correlations of every metric with every retrieval target, with bootstrap CIs."""

    methods: list[CorrelationMethod] = Field(
        default_factory=lambda: list(get_args(CorrelationMethod)), min_length=1
    )
    targets: list[str] = Field(default_factory=lambda: ["rsum", "rsum_it", "rsum_ti"], min_length=1)
    min_n: int = Field(default=3, ge=3)
    bootstrap_resamples: int = Field(default=1000, ge=0)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    seed: int = 0

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, values: list[str]) -> list[str]:
        unknown = [v for v in values if v not in RETRIEVAL_TARGETS]
        if unknown:
            raise ValueError(f"unknown retrieval targets {unknown}; choose from {list(RETRIEVAL_TARGETS)}")
        return values


class AlignmentStudyConfig(StrictModel):
    """``medvl align study``: metrics × retrieval over models × datasets, correlations, domain tests."""

    output_dir: str = "runs/align_study"
    entries: list[StudyEntry] = Field(min_length=1)
    domains: dict[str, str] = Field(default_factory=dict)
    natural_domain: str = "natural"
    medical_domain: str = "medical"
    pooled_groups: list[str] = Field(default_factory=lambda: ["main"], min_length=1)
    metrics: AlignmentMetricsConfig = Field(default_factory=AlignmentMetricsConfig)
    retrieval_ks: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1)
    correlation: CorrelationConfig = Field(default_factory=CorrelationConfig)
    plots: bool = True

    @field_validator("retrieval_ks")
    @classmethod
    def _ks(cls, values: list[int]) -> list[int]:
        if any(k < 1 for k in values):
            raise ValueError(f"every K must be ≥ 1, got {values}")
        return values

    @model_validator(mode="after")
    def _unique_cells(self) -> AlignmentStudyConfig:
        seen: set[tuple[str, str]] = set()
        for e in self.entries:
            key = (e.model, e.dataset)
            if key in seen:
                raise ValueError(f"entry {e.model}/{e.dataset} is listed twice")
            seen.add(key)
        return self

    def domain_of(self, entry: StudyEntry) -> str | None:
        """The entry's domain: its own ``domain``, else ``domains[dataset]``, else ``None``."""
        return entry.domain if entry.domain is not None else self.domains.get(entry.dataset)
