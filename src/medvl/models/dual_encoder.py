"""``DualEncoder``: a vision tower and a text tower with projections into a joint space, task
heads, class prototypes and the learnable logit scale/bias (see docs/DESIGN.md, "Model").

``forward(batch)`` returns a dict with (when applicable):

============================  ==========================================================
key                           value
============================  ==========================================================
``image_features``            (B, F_img) backbone features, pre-projection
``image_embeds``              (B, D) joint-space image embedding (**not** normalised)
``image_embeds_2``            (B, D2) second projection of ``image_features`` (DLILP)
``image_unimodal_embeds``     (B, Dv) ξ(image_features), ξ = ``view_projection`` (SimCLR,
                              masked-image contrast); also returned as ``image_view1_embeds``
``image_view2_embeds``        (B, Dv) ξ of the second augmented view
                              (``batch["pixel_values_view2"]`` / ``batch["bag_view2"]``)
``image_masked_unimodal_embeds``  (B, Dv) ξ of a randomly masked copy (``masked_view``)
``text_features``             (B, F_txt) text backbone features (when ``batch["texts"]``)
``text_embeds``               (B, D) joint-space text embedding (**not** normalised)
``negative_text_embeds``      (B, K, D) joint-space embeddings of the dataset negatives
                              (``batch["negative_texts"]`` + ``negative_mask`` (B, K));
                              zero where a record has fewer than K
``logits.<task>``             (B, C) multilabel/multiclass logits, (B,) ordinal/regression
``prototypes.<task>``         (C, Dp) raw class prototypes (objectives normalise them)
``prototype_logits.<task>``   (B, C) ``s₂ · cos(x, P)`` with the prototype head's own scale
``logit_scale_2``             0-d, ``exp`` of the prototype head's log-scale (DLILP's second τ)
``logit_scale``               0-d, ``exp`` of the learnable log-scale (clamped by ``clamp_()``)
``logit_bias``                0-d, only when configured (SigLIP)
``caption_logits``            (B, T, V) CoCa decoder next-token logits (``decoder`` + texts)
``caption_labels``            (B, T) next-token targets, padding = -100 (ignored)
============================  ==========================================================

With a ``decoder`` (CoCa), batches that carry texts run the vision tower once for both its
pooled features and its token outputs; :meth:`DualEncoder.generate` writes captions.

The trainer calls ``model.clamp_()`` after each optimizer step. Frozen-tower caching is
automatic (see :mod:`medvl.models.caching`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

import torch
from torch import nn

from medvl.config.model import ModelConfig
from medvl.models.caching import FeatureCache
from medvl.models.decoder import build_decoder, caption_targets, frame_captions
from medvl.models.encoders.base import ImageEncoder, TextEncoder, check_texts
from medvl.models.freezing import FreezeState, apply_freezing, count_parameters
from medvl.models.generation import GenerationOptions, generate_ids
from medvl.models.heads import (
    ClassifierHead,
    LogitBias,
    LogitScale,
    PrototypeHead,
    build_projection,
    projection_out_dim,
)
from medvl.models.masking import mask_bag_instances, mask_image_patches
from medvl.models.registry import build_text_encoder, build_vision_encoder

__all__ = ["FORMAT", "DualEncoder", "build_model"]

FORMAT = "medvl.dual_encoder"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

Tokens = Mapping[str, torch.Tensor]


class DualEncoder(nn.Module):
    """Vision tower + optional text tower + heads. Build with :func:`build_model`."""

    def __init__(
        self, cfg: ModelConfig, vision: ImageEncoder, text: TextEncoder | None, decoder_assets: Path | None = None
    ) -> None:
        super().__init__()
        self.config = cfg
        self.vision = vision
        self.text = text
        d = cfg.embed_dim
        self.vision_projection = build_projection(cfg.vision_projection, vision.feature_dim, d)
        self.embed_dim = projection_out_dim(cfg.vision_projection, vision.feature_dim, d)
        self.text_projection: nn.Module | None = None
        if text is not None:
            self.text_projection = build_projection(cfg.text_projection, text.feature_dim, d)
            text_dim = projection_out_dim(cfg.text_projection, text.feature_dim, d)
            if text_dim != self.embed_dim:
                raise ValueError(
                    f"image embeddings have {self.embed_dim} dims but text embeddings {text_dim}: with an identity "
                    "projection the two towers' feature_dim must match (or use a linear projection)"
                )
        self.vision_projection_2: nn.Module | None = None
        dims = {"image_features": vision.feature_dim, "image_embeds": self.embed_dim}
        if cfg.vision_projection_2 is not None:
            self.vision_projection_2 = build_projection(cfg.vision_projection_2, vision.feature_dim, d)
            dims["image_embeds_2"] = projection_out_dim(cfg.vision_projection_2, vision.feature_dim, d)
        self.view_projection: nn.Module | None = None
        if cfg.view_projection is not None:
            self.view_projection = build_projection(cfg.view_projection, vision.feature_dim, d)
        self.classifiers = nn.ModuleDict(
            {
                task: ClassifierHead(head, vision.feature_dim if head.input == "features" else self.embed_dim)
                for task, head in cfg.classifiers.items()
            }
        )
        self.prototype: PrototypeHead | None = None
        if cfg.prototype is not None:
            p = cfg.prototype
            self.prototype = PrototypeHead(p.num_classes, dims[p.input], p.scale)
        self.logit_scale = LogitScale(cfg.logit_scale)
        self.logit_bias = LogitBias(cfg.logit_bias) if cfg.logit_bias is not None else None
        self.decoder: nn.Module | None = None
        if cfg.decoder is not None:
            if text is None:  # pragma: no cover - the config validator requires a text tower
                raise ValueError("decoder needs a text tower")
            if vision.token_dim is None:
                raise ValueError(
                    f"decoder: the vision tower {type(vision).__name__} has no token outputs to attend to; "
                    "use tiny_vit, tiny_cnn, hf, timm or open_clip"
                )
            self.decoder = build_decoder(cfg.decoder, _vocab_capacity(text), vision.token_dim, decoder_assets)

        for name, tower, tower_cfg in (("vision", vision, cfg.vision), ("text", text, cfg.text)):
            if tower is not None and tower_cfg is not None and tower_cfg.lora is not None:
                from medvl.models.adapters import apply_lora

                apply_lora(tower, tower_cfg.lora, where=f"model.{name}.lora")
        self.freeze_states: dict[str, FreezeState] = {
            "vision": apply_freezing(vision, vision.resolve_freeze(cfg.vision.freeze), vision.layer_groups())
        }
        if text is not None and cfg.text is not None:
            self.freeze_states["text"] = apply_freezing(text, cfg.text.freeze, text.layer_groups())
        self.text_cache: FeatureCache | None = None
        if (
            text is not None
            and cfg.text is not None
            and cfg.text.cache != "off"
            and self.freeze_states["text"].fully_frozen
        ):
            self.text_cache = FeatureCache(cfg.text.cache_max_entries)
        self.image_cache: FeatureCache | None = None
        if cfg.vision.cache == "on":  # the config validator guarantees freeze.mode == full
            self.image_cache = FeatureCache(cfg.vision.cache_max_entries)
        self.train(True)

    # ------------------------------------------------------------------ modes and housekeeping
    def train(self, mode: bool = True) -> DualEncoder:
        """Set training mode; fully frozen towers and frozen BatchNorm layers stay in eval mode."""
        super().train(mode)
        for state in self.freeze_states.values():
            state.apply_modes()
        return self

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp every learnable logit scale in place (call after each optimizer step)."""
        self.logit_scale.clamp_()
        if self.prototype is not None:
            self.prototype.clamp_()

    def clear_feature_caches(self) -> None:
        """Drop cached frozen-tower features (call after changing a frozen tower's weights)."""
        for cache in (self.text_cache, self.image_cache):
            if cache is not None:
                cache.clear()

    def feature_cache_stats(self) -> dict[str, dict[str, int]]:
        """``{"text": {"hits", "misses", "entries"}, "image": {...}}`` for the enabled caches."""
        out = {}
        for name, cache in (("text", self.text_cache), ("image", self.image_cache)):
            if cache is not None:
                out[name] = {"hits": cache.stats.hits, "misses": cache.stats.misses, "entries": len(cache)}
        return out

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        self.clear_feature_caches()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def trainable_parameter_counts(self) -> dict[str, int]:
        """Trainable scalar parameters per part (vision, text, heads) and in total."""
        tower_ids = {
            id(p) for tower in (self.vision, self.text) if tower is not None for p in tower.parameters()
        }
        heads = sum(p.numel() for p in self.parameters() if p.requires_grad and id(p) not in tower_ids)
        out = {"vision": count_parameters(self.vision, trainable_only=True), "heads": heads}
        if self.text is not None:
            out["text"] = count_parameters(self.text, trainable_only=True)
        out["total"] = count_parameters(self, trainable_only=True)
        return out

    def no_weight_decay_names(self) -> set[str]:
        """Parameter names that should get no weight decay: biases, norm weights, logit scales/bias
        (every parameter with fewer than 2 dims) and token/position embeddings of the tiny towers."""
        names = set()
        for name, p in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if p.ndim < 2 or leaf in {"cls_token", "pos_embed", "positions", "queries"}:
                names.add(name)
        return names

    def image_preprocessing(self) -> dict[str, Any] | None:
        """The vision checkpoint's preprocessing (``preprocessor_config.json``: ``size``,
        ``image_mean``, ``image_std``, ...) for HF towers that ship one; None otherwise."""
        value = getattr(self.vision, "preprocessing", None)
        return dict(value) if isinstance(value, dict) else None

    @property
    def device(self) -> torch.device:
        return self.logit_scale.log_scale.device

    # ------------------------------------------------------------------------------- text
    def _require_text(self) -> TextEncoder:
        if self.text is None:
            raise RuntimeError("this model has no text tower (model.text is null)")
        return self.text

    def needs_tokenizer_training(self) -> bool:
        """True when the text tower's tokenizer must be trained on a corpus first."""
        return self.text is not None and self.text.needs_tokenizer_training()

    def train_tokenizer(self, texts: Iterable[str]) -> None:
        """Train the text tower's tokenizer on the training texts (tiny text tower without a tokenizer)."""
        self._require_text().train_tokenizer(list(texts))
        self.clear_feature_caches()

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Raw texts → ``{"input_ids", "attention_mask"}`` LongTensors (B, T) on the CPU."""
        return self._require_text().tokenize(check_texts(texts))

    def _tokens_to_device(self, tokens: Tokens) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in tokens.items()}

    def text_features(self, texts: Sequence[str] | Tokens) -> torch.Tensor:
        """Text backbone features (B, F_txt) from raw texts (cached when the tower is frozen) or tokens."""
        tower = self._require_text()
        if isinstance(texts, Mapping):
            return tower(self._tokens_to_device(texts))
        items = check_texts(texts)

        def compute() -> torch.Tensor:
            return tower(self._tokens_to_device(tower.tokenize(items)))

        if self.text_cache is not None:
            return self.text_cache.get_or_compute(items, compute, self.device)
        return compute()

    def project_text(self, features: torch.Tensor) -> torch.Tensor:
        assert self.text_projection is not None
        return self.text_projection(features)

    def encode_text(self, texts: Sequence[str] | Tokens) -> torch.Tensor:
        """Joint-space text embeddings (B, D), not normalised."""
        return self.project_text(self.text_features(texts))

    # ------------------------------------------------------------------------------ image
    def _as_batch(self, batch: Mapping[str, Any] | torch.Tensor) -> Mapping[str, Any]:
        return {self.vision.input_key: batch} if isinstance(batch, torch.Tensor) else batch

    def image_features(self, batch: Mapping[str, Any] | torch.Tensor) -> torch.Tensor:
        """Backbone features (B, F_img) of ``batch[pixel_values]`` (or ``bag``/``bag_mask``).

        With ``vision.cache: on`` the features are cached by ``batch["ids"]``.
        """
        batch = self._as_batch(batch)
        if self.image_cache is not None and "ids" in batch:
            ids = [str(i) for i in batch["ids"]]
            return self.image_cache.get_or_compute(ids, lambda: self.vision.encode_batch(batch), self.device)
        return self.vision.encode_batch(batch)

    def encode_image(self, batch: Mapping[str, Any] | torch.Tensor) -> torch.Tensor:
        """Joint-space image embeddings (B, D), not normalised. Accepts a batch dict or a tensor."""
        return self.vision_projection(self.image_features(batch))

    # ------------------------------------------------------------------------------ forward
    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Every output the configured heads produce for ``batch`` (see the module docstring)."""
        out: dict[str, torch.Tensor] = {}
        captioning = self.decoder is not None and bool(batch.get("texts"))
        if captioning:
            feats, image_tokens = self.vision.encode_tokens(self._as_batch(batch))
        else:
            feats = self.image_features(batch)
        out["image_features"] = feats
        out["image_embeds"] = self.vision_projection(feats)
        if self.vision_projection_2 is not None:
            out["image_embeds_2"] = self.vision_projection_2(feats)
        if self.view_projection is not None:
            out.update(self._view_outputs(batch, feats))
        if self.text is not None and "texts" in batch:
            try:
                text_feats = self.text_features(batch["texts"])
            except (TypeError, ValueError) as exc:
                ids = batch.get("ids")
                raise type(exc)(f"{exc} (batch ids: {list(ids) if ids is not None else 'n/a'})") from exc
            out["text_features"] = text_feats
            out["text_embeds"] = self.project_text(text_feats)
        if self.text is not None and "negative_texts" in batch and "negative_mask" in batch:
            out["negative_text_embeds"] = self._negative_embeds(batch["negative_texts"], batch["negative_mask"])
        if captioning:
            assert self.decoder is not None
            ids, mask = self.caption_tokens(batch["texts"])
            inputs, in_mask, labels = caption_targets(ids.to(self.device), mask.to(self.device))
            out["caption_logits"] = self.decoder(inputs, in_mask, image_tokens)
            out["caption_labels"] = labels
        for task, head in self.classifiers.items():
            x = feats if self.config.classifiers[task].input == "features" else out["image_embeds"]
            out[f"logits.{task}"] = head(x)
        if self.prototype is not None:
            spec = self.config.prototype
            assert spec is not None
            out[f"prototypes.{spec.task}"] = self.prototype.prototypes
            out[f"prototype_logits.{spec.task}"] = self.prototype(out[spec.input])
            out["logit_scale_2"] = self.prototype.logit_scale()
        out["logit_scale"] = self.logit_scale()
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias()
        return out

    def _negative_embeds(self, texts: Sequence[str], mask: torch.Tensor) -> torch.Tensor:
        """(B, K, D) embeddings of the flat, record-major ``texts`` placed where ``mask`` (B, K) is True."""
        rows, k = mask.shape
        out = torch.zeros(rows, k, self.embed_dim, device=self.device)
        if len(texts) != int(mask.sum()):
            raise ValueError(f"{len(texts)} negative texts for {int(mask.sum())} True entries of negative_mask")
        if texts:
            embeds = self.encode_text(list(texts))
            out = out.to(embeds.dtype)
            out[mask.to(out.device)] = embeds
        return out

    def _view_outputs(self, batch: Mapping[str, Any], feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unimodal projector outputs: main view, second augmented view, masked view."""
        assert self.view_projection is not None
        key = self.vision.input_key
        out: dict[str, torch.Tensor] = {}
        out["image_unimodal_embeds"] = out["image_view1_embeds"] = self.view_projection(feats)
        if f"{key}_view2" in batch:
            view = {key: batch[f"{key}_view2"]}
            if "bag_mask_view2" in batch:
                view["bag_mask"] = batch["bag_mask_view2"]
            out["image_view2_embeds"] = self.view_projection(self.vision.encode_batch(view))
        mv = self.config.masked_view
        if mv is not None:
            if key == "bag":
                bag = batch["bag"]
                mask = batch.get("bag_mask")
                if mask is None:
                    mask = torch.ones(bag.shape[:2], dtype=torch.bool, device=bag.device)
                masked = {"bag": bag, "bag_mask": mask_bag_instances(mask, mv.mask_ratio)}
                if "token_mask" in batch:
                    masked["token_mask"] = batch["token_mask"]
            else:
                masked = {key: mask_image_patches(batch[key], mv.mask_ratio, mv.patch_size, mv.fill)}
            out["image_masked_unimodal_embeds"] = self.view_projection(self.vision.encode_batch(masked))
        return out

    # ---------------------------------------------------------------------------- captioning
    def _caption_setup(self) -> tuple[nn.Module, Any]:
        if self.decoder is None:
            raise RuntimeError("this model has no captioning decoder (model.decoder is null)")
        tokenizer = getattr(self._require_text(), "tokenizer", None)
        if tokenizer is None:
            raise RuntimeError("the text tower has no tokenizer yet (train it first: model.train_tokenizer)")
        return self.decoder, tokenizer

    def caption_tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions framed ``[BOS] tokens [EOS]`` (``input_ids``, ``attention_mask``; (B, T), CPU)."""
        decoder, tokenizer = self._caption_setup()
        bos, eos, pad = tokenizer.caption_ids()
        limit: Any = decoder.max_length
        return frame_captions(tokenizer.encode_plain(check_texts(texts)), bos, eos, pad, int(limit))

    @torch.no_grad()
    def generate(
        self, batch: Mapping[str, Any] | torch.Tensor, *, seed: int = 0, **options: Unpack[GenerationOptions]
    ) -> list[str]:
        """One caption per image of ``batch``; ``options`` (``method``, ``max_length``, ``num_beams``, …)
        as :func:`medvl.models.generation.generate_ids` takes them, with its defaults (greedy).

        Runs in eval mode (restored afterwards); ``sample`` draws from a generator seeded by ``seed``.
        """
        decoder, tokenizer = self._caption_setup()
        bos, eos, _ = tokenizer.caption_ids()
        was_training = self.training
        self.eval()
        try:
            _, tokens = self.vision.encode_tokens(self._as_batch(batch))
            ids = generate_ids(decoder, tokens, bos=bos, eos=eos, vocab_size=int(tokenizer.vocab_size),  # type: ignore[arg-type]
                               generator=torch.Generator().manual_seed(seed), **options)
        finally:
            self.train(was_training)
        return [tokenizer.decode(row) for row in ids]

    # ---------------------------------------------------------------------------- save/load
    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors`` (weights), ``config.json`` (ModelConfig + format + medvl
        version) and per-tower assets (``vision/``, ``text/``: HF configs, tokenizers). No pickles."""
        from safetensors.torch import save_model

        from medvl import __version__
        from medvl.utils.io import atomic_write_json

        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        self.vision.save_assets(target / "vision")
        if self.text is not None:
            self.text.save_assets(target / "text")
        save_decoder = getattr(self.decoder, "save_assets", None)
        if callable(save_decoder):
            save_decoder(target / "decoder")
        tmp = target / f".{WEIGHTS_FILE}.tmp"
        save_model(self, str(tmp), metadata={"format": "pt", "medvl_format": FORMAT})
        os.replace(tmp, target / WEIGHTS_FILE)
        atomic_write_json(
            target / CONFIG_FILE,
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "medvl_version": __version__,
                "model": self.config.model_dump(mode="json"),
            },
        )
        return target

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], device: str | torch.device = "cpu"
    ) -> DualEncoder:
        """Rebuild a model written by :meth:`save_pretrained` (no network, no pickled code)."""
        from safetensors.torch import load_model

        from medvl.config.loading import ConfigError, config_from_dict
        from medvl.utils.io import read_json

        source = Path(directory)
        cfg_path, weights = source / CONFIG_FILE, source / WEIGHTS_FILE
        for path in (cfg_path, weights):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: not a medvl model directory")
        meta = read_json(cfg_path)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ConfigError(
                f"{cfg_path}: format is {meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r}"
            )
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise ConfigError(
                f"{cfg_path}: format_version {meta['format_version']} is newer than this medvl supports"
            )
        cfg = config_from_dict(meta["model"], ModelConfig, source=str(cfg_path))
        model = build_model(cfg, assets_dir=source)
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(device))
        if missing or unexpected:
            raise ValueError(
                f"{weights}: weights do not match the config: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        model.to(device)
        model.clear_feature_caches()
        return model


def build_model(cfg: ModelConfig, assets_dir: str | os.PathLike[str] | None = None) -> DualEncoder:
    """Build a :class:`DualEncoder` from its config through the encoder registries.

    ``assets_dir`` (used by ``from_pretrained``) holds ``vision/`` and ``text/`` tower assets so
    that Hugging Face towers are rebuilt from their saved config instead of the hub.
    """
    root = Path(assets_dir) if assets_dir is not None else None
    vision = build_vision_encoder(cfg.vision, root / "vision" if root is not None else None)
    text = None
    if cfg.text is not None:
        text = build_text_encoder(cfg.text, root / "text" if root is not None else None)
    decoder_assets = root / "decoder" if root is not None and (root / "decoder").is_dir() else None
    return DualEncoder(cfg, vision, text, decoder_assets)


def _vocab_capacity(text: TextEncoder) -> int:
    """Token ids the text tower can produce: the tiny tower's configured ``vocab_size`` (its tokenizer
    may be trained later) or its tokenizer's size."""
    cfg_vocab = getattr(getattr(text, "cfg", None), "vocab_size", None)
    if isinstance(cfg_vocab, int):
        return cfg_vocab
    tokenizer = getattr(text, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"text tower {type(text).__name__} has no tokenizer to size the decoder's vocabulary")
    return int(tokenizer.vocab_size)
