"""Schemas for the training objective: a list of named, weighted terms (``objective:`` in a run config).

Example (the Balancing Act on COCO: ``0.9·CLIP + 0.1·BCE``)::

    objective:
      balance: 0.9                 # λ·(contrastive terms) + (1−λ)·(task terms)
      terms:
        - {name: clip, kind: clip}
        - {name: bce, kind: bce, options: {task: coco}}
      gradient_probe: {every_n_steps: 50}

Without ``balance`` the total is ``Σ weight·term`` with each term's ``weight`` (default 1).
With ``balance: λ`` a term's final weight is ``λ·weight`` when its role is ``contrastive`` and
``(1−λ)·weight`` when its role is ``task`` (``weight`` defaults to 1, so this is exactly
``λ·L_contrastive + (1−λ)·L_task``). Image–text kinds (clip, siglip, triplet, unicl) default to
role ``contrastive``, supervised kinds (bce, masked_bce, ce, mse, prototype_bce) and caption to ``task``;
the others (simclr, masked_image, dlilp) must state ``role`` when ``balance`` is used.

The ``options`` of a term are checked against the schema of its ``kind`` (below), so a typo in
an option is an error naming ``terms.<i>.options.<key>``. This module imports no torch.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from medvl.config.base import StrictModel

__all__ = [
    "CAPTION_IGNORE_INDEX",
    "OPTION_SCHEMAS",
    "BCEOptions",
    "CEOptions",
    "CaptionOptions",
    "ClipOptions",
    "DLILPOptions",
    "GradientProbeConfig",
    "MSEOptions",
    "MaskedBCEOptions",
    "MaskedImageContrastiveOptions",
    "ObjectiveConfig",
    "ObjectiveTermConfig",
    "OnMissingNegative",
    "PrototypeBCEOptions",
    "Role",
    "SigLipOptions",
    "SimCLROptions",
    "TermOptions",
    "TripletOptions",
    "UniCLOptions",
    "validate_term_options",
]

Role = Literal["contrastive", "task"]
OnMissingNegative = Literal["error", "warn"]
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
RESERVED_NAMES = frozenset({"total"})


class TermOptions(StrictModel):
    """Base of every term's options; ``default_role`` is the role used by ``balance`` when unset."""

    default_role: ClassVar[Role | None] = None


# ---------------------------------------------------------------------------------------------
# contrastive (image–text)
# ---------------------------------------------------------------------------------------------


class ClipOptions(TermOptions):
    """CLIP / InfoNCE: symmetric cross-entropy over ``logit_scale · norm(img) @ norm(txt).T``."""

    default_role: ClassVar[Role | None] = "contrastive"
    image_key: str = "image_embeds"
    text_key: str = "text_embeds"
    scale_key: str = "logit_scale"
    normalize: bool = Field(default=True, description="L2-normalise both embeddings inside the loss")
    gather: bool = Field(
        default=True,
        description="under torch.distributed with world size > 1, local rows against features gathered "
        "from every rank with gradient (equal to the single-process global-batch loss)",
    )
    on_missing_negative: OnMissingNegative = Field(
        default="error",
        description="a training step in which an image has no negative text (a batch of one pair without "
        "dataset negatives): error, or warn (the step's term skips those rows, counted in n_without_negative)",
    )
    dataset_negatives: bool = Field(
        default=False,
        description="clip only: the image→text rows also score the negative texts drawn from the dataset "
        "(data.negatives; model output negative_text_embeds), so the term works at batch size 1",
    )
    negative_key: str = Field(default="negative_text_embeds", description="model output (B, K, D) of dataset negatives")
    negative_mask_key: str = Field(default="negative_mask", description="batch key (B, K) bool of drawn negatives")


class SigLipOptions(ClipOptions):
    """SigLIP: pairwise sigmoid loss on ``logit_scale · norm(img) @ norm(txt).T + logit_bias``."""

    bias_key: str = "logit_bias"

    @model_validator(mode="after")
    def _no_dataset_negatives(self) -> SigLipOptions:
        if self.dataset_negatives:
            raise ValueError("dataset_negatives is supported by clip and triplet terms only")
        return self


class TripletOptions(TermOptions):
    """Triplet margin loss: anchor = image, positive = its text, negative = a text chosen by ``negatives``."""

    default_role: ClassVar[Role | None] = "contrastive"
    image_key: str = "image_embeds"
    text_key: str = "text_embeds"
    normalize: bool = Field(
        default=True, description="L2-normalise anchor/positive/negative (as the Balancing Act)"
    )
    margin: float = Field(
        default=1.0, ge=0.0, description="hinge margin α (torch default 1.0; Balancing Act uses 2.0)"
    )
    p: float = Field(default=2.0, gt=0.0, description="norm degree of the pairwise distance")
    eps: float = Field(default=1e-6, ge=0.0, description="added to the difference before the norm (as torch)")
    swap: bool = Field(
        default=False, description="distance swap (Balntas et al.), as torch's TripletMarginLoss"
    )
    negatives: Literal["random", "different_label", "hardest", "provided", "dataset"] = Field(
        default="random",
        description="random / different_label / hardest: texts of the batch; dataset: the negative texts "
        "drawn per record from the whole dataset (data.negatives, the Balancing Act's sampler; works at "
        "batch size 1); provided: a model output",
    )
    task: str | None = Field(
        default=None, description="label task for different_label / hardest_different_label (and, with "
        "dataset, it must equal data.negatives.task)"
    )
    on_missing_negative: OnMissingNegative = Field(
        default="error",
        description="a training step in which an anchor has no negative: error, or warn (the anchor is "
        "left out of the mean and counted in n_without_negative)",
    )
    negative_mask_key: str = Field(
        default="negative_mask", description="dataset: batch key (B, K) bool marking drawn negatives"
    )
    hardest_different_label: bool = Field(
        default=False,
        description="with negatives=hardest, search only texts whose label differs from the anchor's",
    )
    negative_key: str = Field(
        default="negative_text_embeds",
        description="model output with the negative texts: (B, D) for provided, (B, K, D) for dataset",
    )

    @model_validator(mode="after")
    def _task_when_labels_needed(self) -> TripletOptions:
        needs_task = self.negatives == "different_label" or (
            self.negatives == "hardest" and self.hardest_different_label
        )
        if needs_task and self.task is None:
            raise ValueError(
                "task is required when negatives use labels (different_label / hardest_different_label)"
            )
        return self


# ---------------------------------------------------------------------------------------------
# supervised
# ---------------------------------------------------------------------------------------------


class _TaskOptions(TermOptions):
    default_role: ClassVar[Role | None] = "task"
    task: str = Field(description="label task name (batch['labels'][task])")
    logits_key: str | None = Field(default=None, description="model output to read; default 'logits.<task>'")

    def resolved_logits_key(self) -> str:
        return self.logits_key if self.logits_key is not None else f"logits.{self.task}"


class BCEOptions(_TaskOptions):
    """Multi-label BCE with logits, mean over records × classes."""

    pos_weight: list[float] | None = Field(
        default=None, description="per-class weight of positives (length C)"
    )


class MaskedBCEOptions(_TaskOptions):
    """BCE counting only annotated classes: mean_b Σ_c m·ℓ / (Σ_c m + eps) (DLILP Eq. 7 as coded)."""

    eps: float = Field(default=1e-3, ge=0.0, description="added to the per-record count of annotated classes")


class CEOptions(_TaskOptions):
    """Multi-class cross-entropy on integer labels."""

    label_smoothing: float = Field(default=0.0, ge=0.0, le=1.0)
    ignore_index: int = Field(default=-100, description="label value that marks an unlabelled record")


class MSEOptions(_TaskOptions):
    """MSE regression of one output onto an ordinal grade or a real value (Balancing Act, ISUP)."""


# ---------------------------------------------------------------------------------------------
# label-aware
# ---------------------------------------------------------------------------------------------


class UniCLOptions(ClipOptions):
    """UniCL: CLIP with soft targets; image i and text j are positives when they share a label."""

    @model_validator(mode="after")
    def _no_dataset_negatives(self) -> UniCLOptions:
        if self.dataset_negatives:
            raise ValueError("dataset_negatives is supported by clip and triplet terms only")
        return self

    task: str = Field(description="label task defining positives")
    use_text_labels: bool = Field(
        default=False,
        description="take the text side's labels from batch['text_labels'][task] instead of the image's",
    )


class PrototypeBCEOptions(TermOptions):
    """Unimodal prototype classifier: masked BCE on ``s · norm(emb) @ norm(prototypes).T``.

    By default the logits are computed here from ``embeds_key``, ``prototypes.<task>`` (raw
    (C, D) class weights, normalised here) and ``scale_key`` (the prototype head's own scale,
    which ``DualEncoder`` outputs as ``logit_scale_2``). With ``logits_key`` set (e.g.
    ``prototype_logits.<task>``) the model's already-scaled cosine logits are used instead.
    """

    default_role: ClassVar[Role | None] = "task"
    task: str
    embeds_key: str = "image_embeds"
    prototypes_key: str | None = Field(
        default=None, description="model output (C, D); default 'prototypes.<task>'"
    )
    scale_key: str = Field(default="logit_scale_2", description="the prototype head's temperature")
    logits_key: str | None = Field(
        default=None, description="read precomputed prototype logits (B, C) instead of computing them"
    )
    normalize: bool = Field(default=True, description="L2-normalise the embeddings (prototypes always are)")
    masked: bool = Field(default=True, description="use batch['label_mask'][task] (absent = all annotated)")
    eps: float = Field(default=1e-3, ge=0.0)

    def resolved_prototypes_key(self) -> str:
        return self.prototypes_key if self.prototypes_key is not None else f"prototypes.{self.task}"


class DLILPOptions(TermOptions):
    """DLILP Eq. 6: prototype BCE through the image–label projection + λ·CLIP through the image–text one."""

    task: str
    clip_weight: float = Field(
        default=0.1, ge=0.0, description="λ of DLILP Eq. 6 (additive, not convex; paper: 0.1)"
    )
    image_key: str = Field(default="image_embeds", description="image–text projection (CLIP branch)")
    text_key: str = "text_embeds"
    scale_key: str = "logit_scale"
    label_embeds_key: str = Field(
        default="image_embeds_2", description="image–label projection (prototype branch)"
    )
    label_scale_key: str = Field(default="logit_scale_2", description="temperature of the prototype branch")
    prototypes_key: str | None = Field(
        default=None, description="model output (C, D); default 'prototypes.<task>'"
    )
    clip_mask_key: str | None = Field(
        default=None,
        description="batch key of a BoolTensor (B,) selecting records whose text is a real report; "
        "only those enter the CLIP branch (DLILP drops template prompts); none = all",
    )
    eps: float = Field(default=1e-3, ge=0.0)
    gather: bool = True

    def resolved_prototypes_key(self) -> str:
        return self.prototypes_key if self.prototypes_key is not None else f"prototypes.{self.task}"


# ---------------------------------------------------------------------------------------------
# unimodal additions
# ---------------------------------------------------------------------------------------------


class _TwoViewOptions(TermOptions):
    temperature: float = Field(default=0.1, gt=0.0, description="fixed τ; ignored when scale_key is set")
    scale_key: str | None = Field(
        default=None, description="model output with a learnable scale 1/τ (optional)"
    )
    normalize: bool = True
    negatives: Literal["nt_xent", "cross_view"] = Field(
        default="nt_xent",
        description="nt_xent: SimCLR's 2N−2 negatives (both views); cross_view: symmetric InfoNCE between "
        "the views only (the benchmarking paper's ℓ_con form)",
    )
    gather: bool = True


class SimCLROptions(_TwoViewOptions):
    """SimCLR on two augmented views, each through the model's unimodal projector ξ."""

    view1_key: str = "image_view1_embeds"
    view2_key: str = "image_view2_embeds"


class MaskedImageContrastiveOptions(_TwoViewOptions):
    """Contrast ξ(φ(x)) with ξ(φ(M(x))) (original vs patch-masked view)."""

    original_key: str = "image_unimodal_embeds"
    masked_key: str = "image_masked_unimodal_embeds"


# ---------------------------------------------------------------------------------------------
# captioning (CoCa)
# ---------------------------------------------------------------------------------------------


#: Label of caption positions that carry no target (padding), ignored by the caption loss.
CAPTION_IGNORE_INDEX = -100


class CaptionOptions(TermOptions):
    """CoCa's captioning loss: token cross-entropy of the decoder's next-token logits.

    Mean over every non-padding target token of the batch (padding labels are -100 and ignored),
    as open_clip's CoCaLoss; ``label_smoothing`` as in ``torch.nn.functional.cross_entropy``.
    Role ``task`` by default, so ``balance: λ`` gives the paper's ``λ·ℓ_multimodal + (1−λ)·ℓ_cap``.
    """

    default_role: ClassVar[Role | None] = "task"
    logits_key: str = "caption_logits"
    labels_key: str = "caption_labels"
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)


OPTION_SCHEMAS: dict[str, type[TermOptions]] = {
    "clip": ClipOptions,
    "siglip": SigLipOptions,
    "triplet": TripletOptions,
    "bce": BCEOptions,
    "masked_bce": MaskedBCEOptions,
    "ce": CEOptions,
    "mse": MSEOptions,
    "unicl": UniCLOptions,
    "prototype_bce": PrototypeBCEOptions,
    "dlilp": DLILPOptions,
    "simclr": SimCLROptions,
    "masked_image": MaskedImageContrastiveOptions,
    "caption": CaptionOptions,
}


def _format_errors(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        where = ".".join(part for part in (prefix, loc) if part) or "<options>"
        if err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown key")
        elif err["type"] == "missing":
            parts.append(f"{where}: required key is missing")
        else:
            parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def validate_term_options(kind: str, options: dict[str, Any], prefix: str = "options") -> TermOptions:
    """Validate ``options`` against the schema of ``kind``; errors name ``<prefix>.<key>``."""
    if kind not in OPTION_SCHEMAS:
        raise ValueError(f"unknown objective kind {kind!r}; known kinds: {', '.join(sorted(OPTION_SCHEMAS))}")
    try:
        return OPTION_SCHEMAS[kind].model_validate(options)
    except ValidationError as exc:
        raise ValueError(_format_errors(exc, prefix)) from None


class ObjectiveTermConfig(StrictModel):
    """One term: a unique ``name`` (used in logs), its ``kind``, ``weight``, ``role`` and ``options``."""

    name: str
    kind: str
    weight: float = Field(default=1.0, ge=0.0)
    role: Role | None = None
    options: dict[str, Any] = Field(default_factory=dict, validate_default=True)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not _NAME_RE.match(name):
            raise ValueError("term names start with a letter or _ and use letters, digits, _ or - only")
        if name in RESERVED_NAMES:
            raise ValueError(f"{name!r} is reserved for the weighted sum")
        return name

    @field_validator("weight")
    @classmethod
    def _finite_weight(cls, weight: float) -> float:
        if not math.isfinite(weight):
            raise ValueError("weight must be finite")
        return weight

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in OPTION_SCHEMAS:
            raise ValueError(
                f"unknown objective kind {kind!r}; known kinds: {', '.join(sorted(OPTION_SCHEMAS))}"
            )
        return kind

    @field_validator("options")
    @classmethod
    def _valid_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = info.data.get("kind")
        if kind is None:  # the kind itself was invalid and is reported on its own
            return options
        try:
            parsed = OPTION_SCHEMAS[kind].model_validate(options)
        except ValidationError as exc:
            raise PydanticCustomError(
                "objective_options", "{detail}", {"detail": _format_errors(exc, "")}
            ) from None
        return parsed.model_dump()  # every default filled in, so the saved run config is fully resolved

    def parsed_options(self) -> TermOptions:
        """The options as the typed schema of this kind (defaults filled in)."""
        return validate_term_options(self.kind, self.options)

    def resolved_role(self) -> Role | None:
        """The explicit ``role``, else the kind's default role (None when the kind has none)."""
        return self.role if self.role is not None else OPTION_SCHEMAS[self.kind].default_role


class GradientProbeConfig(StrictModel):
    """Every ``every_n_steps`` steps, log each term's gradient norm on shared parameters and their ratios."""

    every_n_steps: int = Field(default=0, ge=0, description="0 turns the probe off")
    scope: Literal["shared", "all"] = Field(
        default="shared",
        description="shared: parameters every probed term reaches; all: every trainable parameter",
    )
    terms: list[str] | None = Field(
        default=None, description="names of the terms to probe; default: all weighted terms"
    )


class ObjectiveConfig(StrictModel):
    """The objective: terms, the optional ``balance`` λ and the gradient-balance probe."""

    terms: list[ObjectiveTermConfig] = Field(
        default_factory=lambda: [ObjectiveTermConfig(name="clip", kind="clip")], min_length=1
    )
    balance: float | None = Field(default=None, ge=0.0, le=1.0, description="λ of λ·contrastive + (1−λ)·task")
    log_zero_weight_terms: bool = Field(
        default=True, description="still compute (without gradient) and log terms whose final weight is 0"
    )
    gradient_probe: GradientProbeConfig = Field(default_factory=lambda: GradientProbeConfig())

    @model_validator(mode="after")
    def _consistent(self) -> ObjectiveConfig:
        names = [t.name for t in self.terms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"terms: duplicate term names {dupes}")
        if self.balance is not None:
            roles = set()
            for i, term in enumerate(self.terms):
                role = term.resolved_role()
                if role is None:
                    raise ValueError(
                        f"terms.{i}.role: kind {term.kind!r} has no default role; state role: contrastive "
                        "or role: task when balance is used"
                    )
                roles.add(role)
            missing = {"contrastive", "task"} - roles
            if missing:
                raise ValueError(
                    f"balance: needs at least one term of each role; no term has role {sorted(missing)}"
                )
        if self.gradient_probe.terms is not None:
            unknown = sorted(set(self.gradient_probe.terms) - set(names))
            if unknown:
                raise ValueError(f"gradient_probe.terms: unknown term names {unknown}; terms are {names}")
        return self

    def dataset_negative_terms(self) -> list[tuple[int, ObjectiveTermConfig]]:
        """``(position, term)`` of the terms that read negatives drawn from the dataset."""
        found = []
        for i, term in enumerate(self.terms):
            if term.options.get("negatives") == "dataset" or term.options.get("dataset_negatives"):
                found.append((i, term))
        return found

    def resolved_weights(self) -> dict[str, float]:
        """Final weight of each term: ``weight``, scaled by λ or 1−λ under ``balance``."""
        weights = {}
        for term in self.terms:
            weight = term.weight
            if self.balance is not None:
                weight *= self.balance if term.resolved_role() == "contrastive" else 1.0 - self.balance
            weights[term.name] = weight
        return weights
