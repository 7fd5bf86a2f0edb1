"""Model configuration: vision/text towers, heads, temperature, freezing, frozen-tower caching.

``ModelConfig`` is consumed by :func:`medvl.models.build_model`. Tower configs are a union
discriminated by ``kind`` (the key of the encoder registry in :mod:`medvl.models.registry`),
so an unknown option of a tower is an error that names ``vision.<kind>.<key>``.

Example (YAML)::

    model:
      embed_dim: 64
      vision: {kind: tiny_vit, image_size: 32, patch_size: 8, width: 64, depth: 2,
               patch_keep_ratio: 0.5}
      text:   {kind: hf, name_or_path: sentence-transformers/all-MiniLM-L6-v2,
               freeze: {mode: full}}
      vision_projection: {kind: linear}
      classifiers: {disease: {kind: multilabel, num_classes: 14}}
      logit_scale: {init_temperature: 0.07, learnable: true, max_scale: 100}
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from medvl.config.base import StrictModel

__all__ = [
    "CaptionDecoderConfig",
    "ClassifierHeadConfig",
    "FreezeConfig",
    "HFDecoderConfig",
    "HFTextConfig",
    "HFVisionConfig",
    "LogitBiasConfig",
    "LogitScaleConfig",
    "LoraConfig",
    "MaskedViewConfig",
    "ModelConfig",
    "OpenClipTextConfig",
    "OpenClipVisionConfig",
    "ProjectionConfig",
    "PrototypeHeadConfig",
    "RegionTransformerConfig",
    "SlideEncoderConfig",
    "TextEncoderConfig",
    "TimmVisionConfig",
    "TinyCNNConfig",
    "TinyDecoderConfig",
    "TinyTextConfig",
    "TinyViTConfig",
    "VisionEncoderConfig",
]


def _heads_divide_width(config: Any) -> Any:
    """An after-validator of the attention configs: ``width`` splits evenly over ``heads``."""
    if config.width % config.heads:
        raise ValueError(f"width {config.width} is not divisible by heads {config.heads}")
    return config


class FreezeConfig(StrictModel):
    """Which parameters of one tower are trainable.

    A tower lists its *layer groups* from input to output (e.g. ViT: patch/position embeddings,
    block 0, ..., block L-1, final norm). ``mode``:

    - ``none``: everything trainable;
    - ``full``: every parameter of the tower frozen and the tower kept in eval mode (dropout off,
      BatchNorm statistics fixed), so its outputs are deterministic and cacheable;
    - ``partial``: the first ``groups`` layer groups (or the first ``ceil(fraction · n_groups)``)
      counted **from the input side** are frozen; the rest stays trainable. ``indices`` instead
      freezes exactly the listed groups (0 = the input-side group, negative counts from the end).

    ``train_norms`` keeps normalisation layers (LayerNorm, BatchNorm, GroupNorm, RMSNorm) inside
    the frozen groups trainable. ``freeze_bn_stats`` keeps BatchNorm layers of frozen groups in
    eval mode (running statistics not updated). Projection and classifier heads are never part
    of a tower and are never frozen by this setting.
    """

    mode: Literal["none", "full", "partial"] = "none"
    groups: int | None = Field(default=None, ge=0)
    fraction: float | None = Field(default=None, ge=0.0, le=1.0)
    indices: list[int] | None = None
    train_norms: bool = False
    freeze_bn_stats: bool = True

    @model_validator(mode="after")
    def _check_partial(self) -> FreezeConfig:
        chosen = sum(x is not None for x in (self.groups, self.fraction, self.indices))
        if self.mode == "partial":
            if chosen != 1:
                raise ValueError(
                    "freeze.mode=partial needs exactly one of freeze.groups, freeze.fraction, freeze.indices"
                )
        elif chosen:
            raise ValueError(
                f"freeze.groups/fraction/indices only apply to mode=partial (mode is {self.mode!r})"
            )
        return self


class LoraConfig(StrictModel):
    """LoRA adapters on a tower, through ``peft`` (``pip install 'medvl[peft]'``).

    The tower's own weights are frozen; low-rank updates ``ΔW = (alpha / r)·B·A`` (``alpha/√r``
    with ``rslora``) of the ``target_modules`` train (A random, B zero: training starts from the
    pretrained tower exactly). ``target_modules``: last parts of module names (``[query, value]``);
    default: the tower's attention query/value projections (see :mod:`medvl.models.adapters`).
    ``bias``: ``none``, ``lora_only`` (biases of adapted layers train) or ``all`` (every bias of the tower).
    """

    r: int = Field(default=8, ge=1)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(default=None, min_length=1)
    bias: Literal["none", "lora_only", "all"] = "none"
    rslora: bool = False


class _TowerConfig(StrictModel):
    """Options every tower has: freezing and frozen-output caching.

    ``cache``: ``auto`` caches a fully frozen *text* tower's features keyed by the raw text
    (text has no random augmentation); ``on`` also allows caching a fully frozen *vision* tower
    keyed by record id — only valid when its input is not randomly augmented (precomputed feature
    bags, fixed evaluation transforms); ``off`` never caches. ``on`` without ``freeze.mode=full``
    is an error. ``cache_max_entries`` bounds the cache (new keys beyond it are computed, not stored).
    ``grad_checkpointing`` recomputes block activations in the backward pass (less memory, ~30 %
    more compute); HF towers use ``gradient_checkpointing_enable`` (non-reentrant).
    ``lora``: train LoRA adapters instead of the tower's weights (:class:`LoraConfig`); the tower's
    own weights are then frozen, so ``freeze`` must stay ``mode: none``.
    """

    freeze: FreezeConfig = Field(default_factory=FreezeConfig)
    lora: LoraConfig | None = None
    grad_checkpointing: bool = False
    cache: Literal["auto", "on", "off"] = "auto"
    cache_max_entries: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check_cache(self) -> _TowerConfig:
        if self.cache == "on" and self.freeze.mode != "full":
            raise ValueError(
                "cache=on needs freeze.mode=full (only a fully frozen tower gives fixed outputs)"
            )
        if self.lora is not None and self.freeze.mode != "none":
            raise ValueError(
                f"lora freezes the tower's own weights and trains adapters; freeze.mode={self.freeze.mode!r} "
                "cannot be combined with it (leave freeze.mode: none)"
            )
        return self


# ----------------------------------------------------------------------------------- vision
class TinyCNNConfig(_TowerConfig):
    """Compact CNN: conv stem, then one stage per width (stride-2 conv + BatchNorm + ReLU blocks),
    global average pooling. ``feature_dim = widths[-1]``."""

    kind: Literal["tiny_cnn"] = "tiny_cnn"
    in_channels: int = Field(default=3, ge=1)
    widths: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1)
    blocks_per_stage: int = Field(default=1, ge=1)


class TinyViTConfig(_TowerConfig):
    """Small ViT (pre-norm blocks, CLS token, learned positions).

    ``pooling``: ``cls`` (CLS token) or ``mean`` (mean of patch tokens, CLS excluded);
    ``norm``: take the tokens after (``post``) or before (``pre``) the final LayerNorm.
    ``patch_keep_ratio`` < 1 enables FLIP random patch dropout in training mode only
    (CLS always kept; ``round(keep · n_patches)`` patches kept, at least one).
    """

    kind: Literal["tiny_vit"] = "tiny_vit"
    image_size: int = Field(default=32, ge=1)
    patch_size: int = Field(default=8, ge=1)
    in_channels: int = Field(default=3, ge=1)
    width: int = Field(default=64, ge=1)
    depth: int = Field(default=2, ge=1)
    heads: int = Field(default=4, ge=1)
    mlp_ratio: float = Field(default=2.0, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    pooling: Literal["cls", "mean"] = "cls"
    norm: Literal["post", "pre"] = "post"
    patch_keep_ratio: float = Field(default=1.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_geometry(self) -> TinyViTConfig:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        _heads_divide_width(self)
        return self


class HFVisionConfig(_TowerConfig):
    """A Hugging Face vision backbone from a hub id or a local directory.

    Supported config classes: ViT, CLIP / CLIP-vision, SigLIP / SigLIP-vision, ResNet, ConvNeXt,
    Swin, DINOv2 (with registers). ``pooling``: ``default`` (the model's own pooled output:
    ViT/DINOv2 → post-norm CLS, CLIP → post-norm CLS, SigLIP → attention-pool head when present,
    ResNet/ConvNeXt/Swin → their pooler), ``cls``, ``mean`` (patch tokens / spatial positions,
    prefix tokens excluded) or ``pooler`` (``pooler_output`` as the model computes it).
    ``norm`` chooses the tokens before (``pre``) or after (``post``) the final norm for
    ``cls``/``mean`` (A.4: the Balancing-Act ViT used the *pre*-norm CLS).
    ``patch_keep_ratio`` < 1: FLIP patch dropout (token models only, training mode only).
    ``with_projection`` (CLIP only): features are the checkpoint's ``image_embeds`` (its pretrained
    ``visual_projection``), e.g. to keep a pretrained CLIP's joint space with an identity projection.
    ``trust_remote_code``: let a checkpoint that ships its own code (``auto_map``) run it (off: refused).
    """

    kind: Literal["hf"] = "hf"
    name_or_path: str
    revision: str | None = None
    trust_remote_code: bool = False
    pretrained: bool = True
    pooling: Literal["default", "cls", "mean", "pooler"] = "default"
    norm: Literal["post", "pre"] = "post"
    patch_keep_ratio: float = Field(default=1.0, gt=0.0, le=1.0)
    with_projection: bool = False


class TimmVisionConfig(_TowerConfig):
    """A timm image backbone (``pip install 'medvl[timm]'``): ``model_name`` is a timm architecture
    (``resnet50``, ``vit_small_patch16_224``, …) or a checkpoint (``local-dir:PATH`` / ``hf-hub:ID``);
    ``pretrained`` loads its weights. ``model_args`` go to ``timm.create_model`` (e.g. ``img_size: 64``,
    ``drop_path_rate``). Features are timm's pooled pre-classifier features
    (``forward_head(forward_features(x), pre_logits=True)``; ``feature_dim`` = timm's ``head_hidden_size``,
    the pre-logits width, which exceeds ``num_features`` where a head conv follows the pool, e.g. MobileNetV3).
    Layer groups follow timm's own ``group_matcher`` (stem, then blocks/stages, then the final norm).
    ``patch_keep_ratio`` < 1: FLIP patch dropout through timm's ``patch_drop_rate`` (ViT-style models,
    training mode only). ``grad_checkpointing``: timm's ``set_grad_checkpointing``.
    """

    kind: Literal["timm"] = "timm"
    model_name: str = Field(min_length=1)
    pretrained: bool = False
    model_args: dict[str, Any] = Field(default_factory=dict)
    patch_keep_ratio: float = Field(default=1.0, gt=0.0, le=1.0)


class OpenClipVisionConfig(_TowerConfig):
    """The image tower (``model.visual``) of an open_clip model (``pip install 'medvl[openclip]'``).

    ``model``: a built-in open_clip name (``ViT-B-32``, ``RN50``, …), ``local-dir:PATH`` / a local
    open_clip directory, or ``hf-hub:ID`` (BiomedCLIP); ``pretrained``: a built-in weight tag (ignored for
    directories/hub ids, which carry their weights); ``model_cfg``: an explicit open_clip model config
    (``embed_dim``, ``vision_cfg``, ``text_cfg``) instead of a name, e.g. a tiny one for tests.
    Features are ``visual(x)`` (its own projection included; ``feature_dim = embed_dim``).
    ``patch_keep_ratio`` < 1: open_clip's FLIP ``patch_dropout`` (ViT towers, training only).
    """

    kind: Literal["open_clip"] = "open_clip"
    model: str | None = None
    pretrained: str | None = None
    model_cfg: dict[str, Any] | None = None
    patch_keep_ratio: float = Field(default=1.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_source(self) -> OpenClipVisionConfig:
        if (self.model is None) == (self.model_cfg is None):
            raise ValueError("open_clip tower: give exactly one of model (a name/directory/hf-hub id) or model_cfg")
        return self


class RegionTransformerConfig(StrictModel):
    """The region level of a hierarchical slide encoder (HIPT's ViT-4K, ``vit4k_xs``).

    A region is a square grid of ``tokens`` = R×R patch features of ``patch_dim`` (row-major);
    ``phi`` = Linear(patch_dim, width) + GELU + Dropout, a CLS token and learned positions (a
    ``pos_grid``×``pos_grid`` grid + CLS, resized bicubically to R×R as HIPT does when they
    differ), ``depth`` pre-norm blocks (LayerNorm eps 1e-6, ``heads`` heads, MLP ``mlp_ratio``),
    a final LayerNorm; the region embedding is the CLS token (``width``). HIPT's published
    ViT-4K: patch_dim 384, width 192, depth 6, heads 6, mlp_ratio 4, pos_grid 14, 16×16 tokens
    per 4096-px region; the Balancing Act's prostate H-ViT: 8×8 tokens per 2048-px region.
    """

    patch_dim: int = Field(default=384, ge=1)
    tokens: int = Field(default=64, ge=1, description="patch tokens per region (a square number)")
    width: int = Field(default=192, ge=1)
    depth: int = Field(default=6, ge=1)
    heads: int = Field(default=6, ge=1)
    mlp_ratio: float = Field(default=4.0, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    pos_grid: int | None = Field(default=None, ge=1, description="side of the stored position grid; "
                                 "null = sqrt(tokens) (HIPT's published ViT-4K weights: 14)")

    @model_validator(mode="after")
    def _check(self) -> RegionTransformerConfig:
        side = math.isqrt(self.tokens)
        if side * side != self.tokens:
            raise ValueError(f"tokens must be a square number (an R×R grid of patches), got {self.tokens}")
        _heads_divide_width(self)
        return self

    @property
    def grid(self) -> int:
        """R, the side of a region's token grid."""
        return math.isqrt(self.tokens)


class SlideEncoderConfig(_TowerConfig):
    """Slide-level encoder over bags of features, optionally hierarchical (HIPT / H-ViT).

    Slide level (HIPT's ``global_*``): ``phi`` = Linear(input_dim, width) + ReLU + Dropout;
    ``depth`` transformer layers (post-norm, nhead ``heads``, feed-forward ``ff_dim`` or
    ``width``); gated-attention pooling (Ilse et al.) over the valid instances; ``rho`` =
    Linear(width, width) + ReLU + Dropout. A.4: width 768 there, 2 layers, 3 heads, dropout 0.25.

    With ``region`` the tower is hierarchical: bags of region tokens (B, M, T, patch_dim) go
    through the region transformer first (region features (B, M, d) with d = ``region.width``
    skip it). Without it, bags are (B, N, input_dim). ``freeze_levels`` freezes whole levels
    (``region``: the region transformer; ``slide``: everything after it), the paper's "freeze the
    first two transformers" being ``[region]`` on precomputed patch features. ``weights``: a
    HIPT-format (or medvl) state dict to start from, read with ``torch.load(weights_only=True)``
    or safetensors and mapped by :mod:`medvl.models.encoders.hipt` (never unpickled code).
    """

    kind: Literal["slide"] = "slide"
    input_dim: int | None = Field(default=None, ge=1, description="instance feature dim; with region: "
                                  "region.width (the default)")
    region: RegionTransformerConfig | None = None
    width: int = Field(default=192, ge=1)
    depth: int = Field(default=2, ge=0)
    heads: int = Field(default=3, ge=1)
    ff_dim: int | None = Field(default=None, ge=1)
    attention_dim: int | None = Field(default=None, ge=1)
    dropout: float = Field(default=0.25, ge=0.0, lt=1.0)
    freeze_levels: list[Literal["region", "slide"]] = Field(default_factory=list)
    weights: str | None = Field(default=None, description="HIPT-format or medvl state dict (.pth/.pt/.safetensors)")

    @model_validator(mode="after")
    def _check_heads(self) -> SlideEncoderConfig:
        _heads_divide_width(self)
        if self.region is None and self.input_dim is None:
            raise ValueError("input_dim is required (the feature dim of the bags) unless region is set")
        if self.region is not None and self.input_dim not in (None, self.region.width):
            raise ValueError(f"input_dim {self.input_dim} must equal region.width {self.region.width} (or be omitted)")
        if "region" in self.freeze_levels and self.region is None:
            raise ValueError("freeze_levels: [region] needs a region level (region: ...)")
        if self.freeze_levels and self.freeze.mode != "none":
            raise ValueError("use either freeze_levels or freeze, not both")
        return self

    @property
    def instance_dim(self) -> int:
        """Feature dim of the instances the slide level reads."""
        if self.region is not None:
            return self.region.width
        assert self.input_dim is not None
        return self.input_dim


VisionEncoderConfig = Annotated[
    TinyCNNConfig | TinyViTConfig | HFVisionConfig | TimmVisionConfig | OpenClipVisionConfig | SlideEncoderConfig,
    Field(discriminator="kind"),
]


# ------------------------------------------------------------------------------------- text
class TinyTextConfig(_TowerConfig):
    """Small transformer text encoder (pre-norm blocks, learned positions).

    ``tokenizer``: a ``tokenizer.json`` file (``tokenizers``), a directory holding one, a Hugging
    Face tokenizer directory or hub id, or ``null`` — then a WordPiece tokenizer of at most
    ``vocab_size`` tokens must be trained on the corpus with ``DualEncoder.train_tokenizer(texts)``
    before the first forward. ``pooling``: ``mean`` (mask-aware), ``cls`` (first token) or
    ``eos`` (last non-padding token). ``norm``: tokens after/before the final LayerNorm.
    """

    kind: Literal["tiny_text"] = "tiny_text"
    tokenizer: str | None = None
    vocab_size: int = Field(default=4096, ge=16)
    lowercase: bool = True
    max_length: int = Field(default=64, ge=2)
    width: int = Field(default=64, ge=1)
    depth: int = Field(default=2, ge=1)
    heads: int = Field(default=4, ge=1)
    mlp_ratio: float = Field(default=2.0, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    pooling: Literal["mean", "cls", "eos"] = "mean"
    norm: Literal["post", "pre"] = "post"

    _check_heads = model_validator(mode="after")(_heads_divide_width)


class HFTextConfig(_TowerConfig):
    """A Hugging Face text encoder (BERT family, RoBERTa, CLIP/SigLIP text, sentence-transformers).

    ``pooling``: ``default`` (sentence-transformers directory → its ``1_Pooling`` config and
    ``Normalize`` module; CLIP text → EOS token; SigLIP text → its head on the last token; other
    models → ``cls``), ``cls``, ``mean`` (mask-aware), ``eos`` (last non-padding token) or
    ``pooler`` (``pooler_output``). ``hidden_layers``: average these hidden states (indices into
    ``hidden_states``, 0 = embeddings, -1 = last) before pooling, e.g. DLILP's ``[1, 2, -1]``.
    ``normalize``: L2-normalise the pooled features (``null`` = what the model directory says).
    ``with_projection`` (CLIP only): features are the checkpoint's ``text_embeds`` (its pretrained
    ``text_projection`` on the EOS token). ``trust_remote_code``: as for the vision tower.
    """

    kind: Literal["hf"] = "hf"
    name_or_path: str
    revision: str | None = None
    trust_remote_code: bool = False
    pretrained: bool = True
    pooling: Literal["default", "cls", "mean", "eos", "pooler"] = "default"
    hidden_layers: list[int] | None = Field(default=None, min_length=1)
    normalize: bool | None = None
    max_length: int | None = Field(default=None, ge=2)
    padding: Literal["longest", "max_length"] = "longest"
    with_projection: bool = False


class OpenClipTextConfig(_TowerConfig):
    """The text tower of an open_clip model (``pip install 'medvl[openclip]'``) with its own tokenizer
    (open_clip's BPE padded to ``context_length``, or the Hugging Face tokenizer of an HF text tower).

    ``model``/``pretrained``/``model_cfg`` as for :class:`OpenClipVisionConfig`. Features are
    ``encode_text`` (its own projection included; ``feature_dim = embed_dim``).
    """

    kind: Literal["open_clip"] = "open_clip"
    model: str | None = None
    pretrained: str | None = None
    model_cfg: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> OpenClipTextConfig:
        if (self.model is None) == (self.model_cfg is None):
            raise ValueError("open_clip tower: give exactly one of model (a name/directory/hf-hub id) or model_cfg")
        return self


TextEncoderConfig = Annotated[TinyTextConfig | HFTextConfig | OpenClipTextConfig, Field(discriminator="kind")]


# ------------------------------------------------------------------------------------ heads
class ProjectionConfig(StrictModel):
    """Map tower features into the joint space of ``ModelConfig.embed_dim``.

    ``identity`` (no parameters; the tower's feature_dim is the joint dim), ``linear``
    (``bias`` optional; DLILP uses no bias) or ``mlp`` (Linear → GELU → Dropout → Linear with
    ``hidden_dim``, default = input dim).
    """

    kind: Literal["identity", "linear", "mlp"] = "linear"
    bias: bool = False
    hidden_dim: int | None = Field(default=None, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class ClassifierHeadConfig(StrictModel):
    """A task head on the image side; output ``logits.<task>`` in ``DualEncoder.forward``.

    ``kind``: ``multilabel`` (B, C) logits, ``multiclass`` (B, C) logits, ``ordinal`` or
    ``regression`` → (B,) scalar (the Balancing Act regresses the ISUP grade with MSE).
    ``input``: ``features`` (backbone, pre-projection; the Balancing Act) or ``embeds``
    (joint-space embedding). Optional hidden layer (``hidden_dim``) and dropout.
    """

    kind: Literal["multilabel", "multiclass", "ordinal", "regression"]
    num_classes: int | None = Field(default=None, ge=1)
    input: Literal["features", "embeds"] = "features"
    hidden_dim: int | None = Field(default=None, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    bias: bool = True

    @model_validator(mode="after")
    def _check_classes(self) -> ClassifierHeadConfig:
        if self.kind in ("multilabel", "multiclass") and self.num_classes is None:
            raise ValueError(f"a {self.kind} head needs num_classes")
        if self.kind in ("ordinal", "regression") and self.num_classes not in (None, 1):
            raise ValueError(f"an {self.kind} head has one scalar output; drop num_classes")
        return self


class LogitScaleConfig(StrictModel):
    """A learnable log logit scale: ``scale = exp(log_scale)``, initialised to ``1/init_temperature``.

    CLIP: ``init_temperature=0.07`` (log scale ln(1/0.07) ≈ 2.659). ``clamp_()`` (called by the
    trainer after every optimizer step) keeps ``min_scale ≤ scale ≤ max_scale`` (default
    [1, 100] = log scale in [0, ln 100], as open_clip and DLILP). ``learnable=false`` keeps it fixed.
    """

    init_temperature: float = Field(default=0.07, gt=0.0)
    learnable: bool = True
    max_scale: float | None = Field(default=100.0, gt=0.0)
    min_scale: float | None = Field(default=1.0, gt=0.0)

    @model_validator(mode="after")
    def _check_range(self) -> LogitScaleConfig:
        init = 1.0 / self.init_temperature
        if self.max_scale is not None and self.min_scale is not None and self.min_scale > self.max_scale:
            raise ValueError(f"min_scale {self.min_scale} > max_scale {self.max_scale}")
        if self.max_scale is not None and init > self.max_scale * (1 + 1e-9):
            raise ValueError(f"1/init_temperature = {init:g} exceeds max_scale {self.max_scale:g}")
        if self.min_scale is not None and init < self.min_scale * (1 - 1e-9):
            raise ValueError(f"1/init_temperature = {init:g} is below min_scale {self.min_scale:g}")
        return self

    @property
    def init_log_scale(self) -> float:
        return math.log(1.0 / self.init_temperature)


class LogitBiasConfig(StrictModel):
    """A learnable scalar logit bias (SigLIP: init -10 with init_temperature 0.1)."""

    init: float = -10.0
    learnable: bool = True


class PrototypeHeadConfig(StrictModel):
    """Class prototypes ``P`` (C, dim) for ``task``, Kaiming-normal initialised (as DLILP), with the
    head's own learnable logit scale ``scale`` (DLILP's second temperature, clamped to [1, 100]).

    ``input`` chooses the embedding they live next to: ``image_embeds``, ``image_embeds_2`` (DLILP:
    the second projection) or ``image_features``. Outputs: ``prototypes.<task>`` (C, dim, raw — the
    objective normalises), ``prototype_logits.<task>`` = ``s · normalize(x) @ normalize(P).T``
    (B, C) and ``logit_scale_2`` = ``s``.
    """

    task: str = Field(min_length=1)
    num_classes: int = Field(ge=1)
    input: Literal["image_embeds", "image_embeds_2", "image_features"] = "image_embeds"
    scale: LogitScaleConfig = Field(default_factory=LogitScaleConfig)


class MaskedViewConfig(StrictModel):
    """A randomly masked copy of the input image for masked-image contrast (benchmarking paper).

    Pixels: the image is cut into ``patch_size`` squares and a random ``mask_ratio`` of them is set
    to ``fill`` (0 = the mean colour after normalisation). Feature bags: a random ``mask_ratio`` of
    the valid instances is masked out (at least one kept). Drawn from the global torch RNG.
    """

    mask_ratio: float = Field(default=0.5, gt=0.0, lt=1.0)
    patch_size: int = Field(default=16, ge=1)
    fill: float = 0.0


class TinyDecoderConfig(StrictModel):
    """CoCa's text decoder, built in: ``unimodal_layers`` causal self-attention blocks over the caption
    tokens, then ``multimodal_layers`` blocks that add cross-attention to the image tower's token
    outputs (Yu et al. 2022, Fig. 2), a final LayerNorm and a language-model head over the text
    tower's tokenizer vocabulary (tied to the token embedding when ``tie_embeddings``).

    ``image_queries``: CoCa's attentional pooler — that many learned queries attend over the image
    tokens and the decoder cross-attends to them (null = cross-attend to every image token).
    ``max_length``: longest caption in tokens, BOS/EOS included (longer ones are truncated).
    """

    kind: Literal["tiny"] = "tiny"
    width: int = Field(default=64, ge=1)
    heads: int = Field(default=4, ge=1)
    unimodal_layers: int = Field(default=1, ge=0)
    multimodal_layers: int = Field(default=1, ge=1)
    mlp_ratio: float = Field(default=2.0, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    max_length: int = Field(default=64, ge=3)
    tie_embeddings: bool = True
    image_queries: int | None = Field(default=None, ge=1)

    _check_heads = model_validator(mode="after")(_heads_divide_width)


class HFDecoderConfig(StrictModel):
    """A Hugging Face causal language model used as CoCa's decoder (GPT-2, BERT/RoBERTa as decoders,
    …), loaded with ``is_decoder=True, add_cross_attention=True``: every layer cross-attends to the
    image tokens (projected to its hidden size); cross-attention weights absent from the checkpoint
    start fresh. Its vocabulary must cover the text tower's tokenizer (same token ids).
    ``pretrained: false`` builds it from the directory's config with random weights.
    """

    kind: Literal["hf"] = "hf"
    name_or_path: str
    revision: str | None = None
    pretrained: bool = True
    max_length: int = Field(default=64, ge=3)


CaptionDecoderConfig = Annotated[TinyDecoderConfig | HFDecoderConfig, Field(discriminator="kind")]


class ModelConfig(StrictModel):
    """The dual encoder: towers, projections into ``embed_dim``, heads and temperature.

    ``text: null`` builds an image-only model (unimodal prototype training, SimCLR).
    ``vision_projection_2`` adds DLILP's second projection (output ``image_embeds_2``).
    ``view_projection`` adds the unimodal projector ξ of SimCLR / masked-image contrast:
    ``image_unimodal_embeds`` = ξ(features of the main view), also returned as
    ``image_view1_embeds``; ``image_view2_embeds`` = ξ(features of ``batch["pixel_values_view2"]``
    or ``batch["bag_view2"]``) when the batch has a second augmented view; with ``masked_view``,
    ``image_masked_unimodal_embeds`` = ξ(features of a randomly masked copy of the main view).
    ``decoder`` adds CoCa's captioning decoder (outputs ``caption_logits``/``caption_labels`` for
    batches with texts; ``DualEncoder.generate`` writes captions); it needs a text tower, whose
    tokenizer it shares, and a vision tower with token outputs.
    """

    embed_dim: int = Field(default=64, ge=1)
    vision: VisionEncoderConfig = Field(default_factory=TinyViTConfig)
    text: TextEncoderConfig | None = Field(default_factory=TinyTextConfig)
    vision_projection: ProjectionConfig = Field(default_factory=ProjectionConfig)
    text_projection: ProjectionConfig = Field(default_factory=ProjectionConfig)
    vision_projection_2: ProjectionConfig | None = None
    view_projection: ProjectionConfig | None = None
    masked_view: MaskedViewConfig | None = None
    classifiers: dict[str, ClassifierHeadConfig] = Field(default_factory=dict)
    prototype: PrototypeHeadConfig | None = None
    logit_scale: LogitScaleConfig = Field(default_factory=LogitScaleConfig)
    logit_bias: LogitBiasConfig | None = None
    decoder: CaptionDecoderConfig | None = None

    @model_validator(mode="after")
    def _check_heads(self) -> ModelConfig:
        if self.decoder is not None and self.text is None:
            raise ValueError("decoder needs a text tower (model.text): the captions use its tokenizer")
        if (
            self.prototype is not None
            and self.prototype.input == "image_embeds_2"
            and self.vision_projection_2 is None
        ):
            raise ValueError("prototype.input=image_embeds_2 needs vision_projection_2")
        if self.masked_view is not None and self.view_projection is None:
            raise ValueError("masked_view needs view_projection (the unimodal projector)")
        names = list(self.classifiers) + ([self.prototype.task] if self.prototype is not None else [])
        for task in names:
            if not task or "." in task:
                raise ValueError(f"task name {task!r} must be non-empty and contain no '.'")
        return self
