"""Hugging Face ``transformers`` towers (vision and text) from a hub id or a local directory.

Output differences between architectures are handled by the model's *config class* (never by
a name substring):

================  ===========  ===============================  =================================
config class      layout       pre / post final norm            ``default`` pooling
================  ===========  ===============================  =================================
ViT               tokens, CLS  hidden_states[-1] / last_hidden   CLS after the final LayerNorm
DINOv2 (+regs)    tokens, CLS  hidden_states[-1] / last_hidden   CLS after the final LayerNorm
CLIP(-vision)     tokens, CLS  last_hidden / post_layernorm(·)   pooler_output (post-norm CLS)
SigLIP(-vision)   tokens       hidden_states[-1] / last_hidden   attention-pool head (else mean)
SigLIP 2 vision   tokens       hidden_states[-1] / last_hidden   attention-pool head (NaFlex patches)
ALIGN vision      spatial      (EfficientNet, no final norm)     pooler_output (global average pool)
Swin              tokens       hidden_states[-1] / last_hidden   pooler_output (mean, post-norm)
ConvNeXt          spatial      last_hidden / LN(spatial mean)    pooler_output (LN of the mean)
ResNet            spatial      (no final norm)                   pooler_output (global avg pool)
================  ===========  ===============================  =================================

Text: BERT-family/RoBERTa/other encoders (``default`` = CLS of the last layer), CLIP text
(``default`` = ``pooler_output``, the EOS token after the final norm), SigLIP text (``default`` =
``pooler_output``, its head on the last token; needs ``padding: max_length``), and
sentence-transformers directories (``modules.json``): their ``1_Pooling`` mode and ``Normalize``
module are applied, so features equal ``SentenceTransformer.encode``.

Modules the chosen pooling never uses (e.g. the BERT/ViT ``pooler`` unless ``pooling: pooler``,
the final norm when ``norm: pre``) are frozen, so they carry no optimizer state and DDP needs no
``find_unused_parameters``; ``unused_parameter_names()`` lists them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medvl.config.model import HFTextConfig, HFVisionConfig
from medvl.models.encoders.base import ImageEncoder, TextEncoder, check_texts
from medvl.models.encoders.patch_dropout import PatchDropout
from medvl.models.encoders.pooling import pool_tokens, spatial_tokens
from medvl.models.encoders.tokenizer import HFTokenizer
from medvl.utils.io import atomic_write_json, read_json

__all__ = ["HFTextEncoder", "HFVisionEncoder", "read_sentence_transformers_dir"]

TOWER_FILE = "medvl_tower.json"
PREPROCESSOR_FILE = "preprocessor_config.json"


def _read_preprocessing(source: str | Path, revision: str | None) -> dict[str, Any] | None:
    """The checkpoint's ``preprocessor_config.json`` (image size, mean, std) when it has one."""
    path = Path(source) / PREPROCESSOR_FILE
    if not path.is_file():
        if Path(source).is_dir():
            return None
        try:  # a hub id: the cached/downloaded file, or nothing when offline and not cached
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(str(source), PREPROCESSOR_FILE, revision=revision))
        except Exception:
            return None
    data = read_json(path)
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports (unexpected keys of composite checkpoints) while loading."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _get(module: nn.Module, *paths: str) -> Any:
    """The first attribute path that exists (``encoder.layers``, ``layers``, ...), else None."""
    for path in paths:
        obj: Any = module
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    return None


def _layer_list(model: nn.Module) -> list[nn.Module]:
    layers = _get(
        model, "layers", "encoder.layers", "encoder.layer", "encoder.stages", "encoder.blocks", "transformer.layer",
        "layer"
    )
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"cannot find the block list of {type(model).__name__}; layer groups unavailable")
    return list(layers)


def _group(*modules: Any) -> nn.Module:
    present = [m for m in modules if isinstance(m, nn.Module)]
    return present[0] if len(present) == 1 else nn.ModuleList(present)


def _load_hf_model(
    model_cls: Any, name_or_path: str, revision: str | None, pretrained: bool, assets_dir: Path | None,
    trust_remote_code: bool = False,
) -> Any:
    """Weights from ``name_or_path`` (pretrained) or a random init from a config (``assets_dir``
    when rebuilding a saved medvl model, whose weights come from its own safetensors).
    ``trust_remote_code`` is passed explicitly (False unless the tower config allows it)."""
    from transformers import AutoConfig, AutoModel

    trust = {"trust_remote_code": bool(trust_remote_code)}
    with _quiet_transformers():
        if assets_dir is not None and (assets_dir / "config.json").is_file():
            config = AutoConfig.from_pretrained(str(assets_dir), **trust)
            pretrained = False
        else:
            kwargs = {"revision": revision} if revision else {}
            config = AutoConfig.from_pretrained(name_or_path, **kwargs, **trust)
            if pretrained:
                if model_cls is AutoModel:
                    return AutoModel.from_pretrained(name_or_path, **kwargs, **trust)
                sub = _sub_config(config, model_cls)
                prefix = getattr(model_cls, "base_model_prefix", "")
                if sub is not config and prefix not in ("vision_model", "text_model"):
                    # a tower class that cannot read its weights out of the composite checkpoint by
                    # itself (ALIGN's towers): load the whole model and keep the tower
                    full = AutoModel.from_pretrained(name_or_path, **kwargs, **trust)
                    for attr in ("vision_model", "text_model"):
                        part = getattr(full, attr, None)
                        if isinstance(part, model_cls):
                            return part
                model, info = model_cls.from_pretrained(
                    name_or_path, config=sub, output_loading_info=True, **kwargs, **trust
                )
                missing = list(info.get("missing_keys") or [])
                if missing:
                    raise ValueError(f"{name_or_path}: {len(missing)} weights of {model_cls.__name__} are not in the "
                                     f"checkpoint (e.g. {missing[:3]}); the tower would start from random weights")
                return model
        if model_cls is AutoModel:
            return AutoModel.from_config(config, **trust)
        return model_cls(_sub_config(config, model_cls))


def _enable_hf_checkpointing(model: Any, tower: str) -> None:
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(
            f"{tower}.grad_checkpointing: {type(model).__name__} does not support gradient checkpointing"
        )
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _sub_config(config: Any, model_cls: Any) -> Any:
    """The tower's own config inside a composite (CLIPConfig → vision_config for CLIPVisionModel).

    The composite's ``projection_dim`` is copied into the tower config, which is where
    CLIP*ModelWithProjection reads it (sub-configs otherwise keep their default of 512).
    """
    expected = getattr(model_cls, "config_class", None)
    if expected is not None and not isinstance(config, expected):
        for attr in ("vision_config", "text_config"):
            sub = getattr(config, attr, None)
            if sub is not None and isinstance(sub, expected):
                if hasattr(config, "projection_dim") and hasattr(sub, "projection_dim"):
                    sub.projection_dim = config.projection_dim
                return sub
    return config


# ------------------------------------------------------------------------------------ vision
@dataclass(frozen=True)
class _VisionArch:
    name: str
    layout: str  # "tokens" | "spatial"
    prefix_tokens: int  # CLS / register tokens (tokens layout)
    has_cls: bool
    final_norm: str | None  # attribute of the final norm module
    pre_is_last_hidden: bool  # last_hidden_state is the *pre*-norm sequence (CLIP, ConvNeXt)
    default_pooling: str
    supports_patch_dropout: bool


def _vision_model_class(config: Any, with_projection: bool = False) -> Any:
    import transformers as tf

    if isinstance(config, (tf.CLIPConfig, tf.CLIPVisionConfig)):
        return tf.CLIPVisionModelWithProjection if with_projection else tf.CLIPVisionModel
    if isinstance(config, (tf.SiglipConfig, tf.SiglipVisionConfig)):
        return tf.SiglipVisionModel
    if isinstance(config, (tf.Siglip2Config, tf.Siglip2VisionConfig)):
        return tf.Siglip2VisionModel
    if isinstance(config, (tf.AlignConfig, tf.AlignVisionConfig)):
        return tf.AlignVisionModel
    return tf.AutoModel


def _vision_arch(config: Any) -> _VisionArch:
    import transformers as tf

    if isinstance(config, (tf.CLIPConfig, tf.CLIPVisionConfig)):
        return _VisionArch("clip", "tokens", 1, True, "post_layernorm", True, "pooler", True)
    if isinstance(config, (tf.SiglipConfig, tf.SiglipVisionConfig)):
        vc = getattr(config, "vision_config", config)
        default = "pooler" if getattr(vc, "vision_use_head", True) else "mean"
        return _VisionArch("siglip", "tokens", 0, False, "post_layernorm", False, default, True)
    if isinstance(config, (tf.Siglip2Config, tf.Siglip2VisionConfig)):
        vc = getattr(config, "vision_config", config)
        default = "pooler" if getattr(vc, "vision_use_head", True) else "mean"
        return _VisionArch("siglip2", "tokens", 0, False, "post_layernorm", False, default, False)
    if isinstance(config, (tf.AlignConfig, tf.AlignVisionConfig)):
        return _VisionArch("align", "spatial", 0, False, None, True, "pooler", False)
    if isinstance(config, tf.Dinov2WithRegistersConfig):
        n = 1 + int(config.num_register_tokens)
        return _VisionArch("dinov2_registers", "tokens", n, True, "layernorm", False, "cls", True)
    if isinstance(config, tf.Dinov2Config):
        return _VisionArch("dinov2", "tokens", 1, True, "layernorm", False, "cls", True)
    if isinstance(config, tf.ViTConfig):
        return _VisionArch("vit", "tokens", 1, True, "layernorm", False, "cls", True)
    if isinstance(config, tf.SwinConfig):
        return _VisionArch("swin", "tokens", 0, False, "layernorm", False, "pooler", False)
    if isinstance(config, tf.ConvNextConfig):
        return _VisionArch("convnext", "spatial", 0, False, "layernorm", True, "pooler", False)
    if isinstance(config, tf.ResNetConfig):
        return _VisionArch("resnet", "spatial", 0, False, None, True, "pooler", False)
    raise ValueError(
        f"unsupported Hugging Face vision config {type(config).__name__}; supported: ViT, CLIP, SigLIP, SigLIP 2, "
        "ALIGN (EfficientNet), DINOv2, Swin, ConvNeXt, ResNet (register another backend in medvl.models.registry)"
    )


class HFVisionEncoder(ImageEncoder):
    """A ``transformers`` vision backbone → pooled features (B, feature_dim)."""

    model: Any  # a transformers PreTrainedModel

    def __init__(self, cfg: HFVisionConfig, assets_dir: Path | None = None) -> None:
        super().__init__()
        from transformers import AutoConfig

        self.cfg = cfg
        with _quiet_transformers():
            trust = cfg.trust_remote_code
            if assets_dir is not None and (assets_dir / "config.json").is_file():
                probe = AutoConfig.from_pretrained(str(assets_dir), trust_remote_code=trust)
            else:
                probe = AutoConfig.from_pretrained(
                    cfg.name_or_path, **({"revision": cfg.revision} if cfg.revision else {}),
                    trust_remote_code=trust,
                )
        self.arch = _vision_arch(probe)
        self.preprocessing: dict[str, Any] | None = _read_preprocessing(
            assets_dir
            if assets_dir is not None and (assets_dir / "config.json").is_file()
            else cfg.name_or_path,
            cfg.revision,
        )
        if cfg.with_projection and self.arch.name != "clip":
            raise ValueError(
                f"vision.hf.with_projection applies to CLIP checkpoints only, not {self.arch.name}"
            )
        self.model = _load_hf_model(
            _vision_model_class(probe, cfg.with_projection),
            cfg.name_or_path,
            cfg.revision,
            cfg.pretrained,
            assets_dir,
            cfg.trust_remote_code,
        )
        self.pooling = self.arch.default_pooling if cfg.pooling == "default" else cfg.pooling
        self.norm = cfg.norm
        self._check_options()
        conf = self.model.config
        sizes = getattr(conf, "hidden_sizes", None)
        if cfg.with_projection:
            self.feature_dim = int(conf.projection_dim)
        elif self.arch.name == "align":  # EfficientNet: width of the last MBConv block
            from transformers.models.align.modeling_align import round_filters

            self.feature_dim = int(round_filters(conf, conf.out_channels[-1]))
        else:
            self.feature_dim = (
                int(sizes[-1]) if self.arch.layout == "spatial" and sizes else int(conf.hidden_size)
            )
        # spatial towers' tokens are the positions of the map they pool; token layouts have hidden_size
        self.token_dim = self.feature_dim if self.arch.layout == "spatial" else int(conf.hidden_size)
        self.patch_dropout = PatchDropout(cfg.patch_keep_ratio, self.arch.prefix_tokens)
        if cfg.patch_keep_ratio < 1.0:
            _get(self.core, "embeddings").register_forward_hook(self._drop_patches)
        if cfg.grad_checkpointing:
            _enable_hf_checkpointing(self.model, "vision")
        self._unused = self._unused_modules()
        for module in self._unused:
            for p in module.parameters():
                p.requires_grad_(False)

    @property
    def core(self) -> Any:
        """The backbone module holding embeddings/encoder/norm (``vision_model`` inside *WithProjection)."""
        return getattr(self.model, "vision_model", self.model)

    def _check_options(self) -> None:
        a, pooling = self.arch, self.pooling
        where = f"vision.hf ({a.name}, {self.cfg.name_or_path})"
        if pooling == "cls" and not a.has_cls:
            raise ValueError(f"{where}: pooling=cls but this model has no CLS token; use mean or pooler")
        if pooling == "pooler" and self.cfg.norm == "pre":
            raise ValueError(
                f"{where}: norm=pre does not apply to pooling=pooler (the model's own pooled output)"
            )
        if self.cfg.norm == "pre" and a.final_norm is None:
            raise ValueError(f"{where}: this model has no final norm, so norm=pre does not apply")
        if self.cfg.with_projection and (pooling != "pooler" or self.cfg.norm != "post"):
            raise ValueError(
                f"{where}: with_projection uses CLIP's own pooled output; keep pooling=default, norm=post"
            )
        if pooling == "pooler" and a.name in ("siglip", "siglip2") and getattr(self.core, "head", None) is None:
            raise ValueError(f"{where}: this SigLIP model has no attention-pool head; use pooling=mean")
        if self.cfg.patch_keep_ratio < 1.0 and not a.supports_patch_dropout:
            raise ValueError(f"{where}: patch dropout needs a plain token ViT; {a.name} cannot drop patches")

    def _drop_patches(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return self.patch_dropout(output)
        return (self.patch_dropout(output[0]), *output[1:])

    def _unused_modules(self) -> list[nn.Module]:
        unused: list[nn.Module] = []
        if self.pooling != "pooler":
            for name in ("pooler", "head"):
                module = getattr(self.core, name, None)
                if isinstance(module, nn.Module) and any(True for _ in module.parameters()):
                    unused.append(module)
        if self.norm == "pre" and self.arch.final_norm is not None:
            unused.append(getattr(self.core, self.arch.final_norm))
        return unused

    def unused_parameter_names(self) -> list[str]:
        """Parameters the configured pooling never uses (frozen at construction)."""
        ids = {id(p) for m in self._unused for p in m.parameters()}
        return [n for n, p in self.named_parameters() if id(p) in ids]

    def layer_groups(self) -> list[nn.Module]:
        m = self.core
        name = self.arch.name
        if name == "clip":
            tail = _group(m.post_layernorm, getattr(self.model, "visual_projection", None))
            return [_group(m.embeddings, m.pre_layrnorm), *_layer_list(m), tail]
        if name == "resnet":
            return [m.embedder, *_layer_list(m)]
        if name == "align":  # EfficientNet: stem, MBConv blocks, then the top conv inside the encoder
            top = _group(*(getattr(m.encoder, a, None) for a in ("top_conv", "top_bn")))
            return [m.embeddings, *_layer_list(m), *([top] if isinstance(top, nn.Module) and
                                                      any(True for _ in top.parameters()) else [])]
        tail = _group(*(getattr(m, a, None) for a in (self.arch.final_norm or "", "pooler", "head")))
        return [m.embeddings, *_layer_list(m), tail]

    def save_assets(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(str(directory))
        if self.preprocessing is not None:
            atomic_write_json(directory / PREPROCESSOR_FILE, self.preprocessing)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) pixel values (normalised as the checkpoint expects) → (B, feature_dim)."""
        return self._pooled_and_tokens(pixel_values, with_tokens=False)[0]

    def encode_tokens(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features (= :meth:`forward`) and the last layer's tokens (B, N, token_dim) of one pass:
        token layouts give the sequence the pooling reads (prefix tokens included; after the final norm
        unless ``norm: pre``), spatial ones (ResNet, ConvNeXt, ALIGN) the last feature map's positions."""
        pooled, tokens = self._pooled_and_tokens(self._input(batch), with_tokens=True)
        assert tokens is not None
        return pooled, tokens

    def _pooled_and_tokens(
        self, pixel_values: torch.Tensor, with_tokens: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be (B, C, H, W), got {tuple(pixel_values.shape)}")
        a = self.arch
        need_hidden = self.norm == "pre" and not a.pre_is_last_hidden
        if a.name == "siglip2":
            out = self.model(**_naflex_inputs(pixel_values, int(self.model.config.patch_size)),
                             output_hidden_states=need_hidden)
        else:
            out = self.model(pixel_values=pixel_values, output_hidden_states=need_hidden)
        if a.layout == "spatial":
            tokens = spatial_tokens(out.last_hidden_state) if with_tokens else None
            if self.pooling == "pooler":
                return out.pooler_output.flatten(1), tokens
            x = out.last_hidden_state.mean(dim=(2, 3))  # (B, C) mean over positions
            if self.norm == "post" and a.final_norm is not None:
                x = getattr(self.core, a.final_norm)(x)
            return x, tokens
        pooled = None
        if self.pooling == "pooler":  # the model's own pooled output (or CLIP's projection of it)
            pooled = out.image_embeds if self.cfg.with_projection else out.pooler_output.flatten(1)
            if not with_tokens:
                return pooled, None
        if self.norm == "pre":
            seq = out.last_hidden_state if a.pre_is_last_hidden else out.hidden_states[-1]
        elif a.pre_is_last_hidden:  # CLIP: last_hidden_state precedes post_layernorm
            seq = getattr(self.core, a.final_norm or "")(out.last_hidden_state)
        else:
            seq = out.last_hidden_state
        if pooled is None:
            pooled = seq[:, 0] if self.pooling == "cls" else seq[:, a.prefix_tokens :].mean(dim=1)
        return pooled, seq


def _naflex_inputs(pixel_values: torch.Tensor, patch: int) -> dict[str, torch.Tensor]:
    """(B, C, H, W) → SigLIP 2's NaFlex inputs: patches (B, N, p·p·C) in the order its image processor
    writes them (row-major over the grid, each patch (p, p, C)), a full ``pixel_attention_mask`` and
    ``spatial_shapes`` (H/p, W/p). H and W must be multiples of the patch size."""
    b, c, h, w = pixel_values.shape
    if h % patch or w % patch:
        raise ValueError(f"SigLIP 2 tower: image size {h}x{w} is not a multiple of its patch size {patch}")
    gh, gw = h // patch, w // patch
    patches = pixel_values.reshape(b, c, gh, patch, gw, patch).permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, -1)
    mask = torch.ones(b, gh * gw, dtype=torch.long, device=pixel_values.device)
    shapes = torch.tensor([[gh, gw]] * b, dtype=torch.long, device=pixel_values.device)
    return {"pixel_values": patches, "pixel_attention_mask": mask, "spatial_shapes": shapes}


# -------------------------------------------------------------------------------------- text
@dataclass(frozen=True)
class SentenceTransformersInfo:
    """What a sentence-transformers directory says about pooling (modules.json + 1_Pooling)."""

    transformer_dir: Path
    pooling: str  # cls | mean | max | mean_sqrt_len | eos
    normalize: bool
    max_seq_length: int | None
    do_lower_case: bool


_ST_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "eos",
    "pooling_mode_weightedmean_tokens": "weightedmean",
}


def read_sentence_transformers_dir(root: Path) -> SentenceTransformersInfo | None:
    """Parse ``modules.json`` of a sentence-transformers directory (None when there is none).

    Supports Transformer → Pooling (one mode: cls/mean/max/mean_sqrt_len/lasttoken) → optional
    Normalize; other modules (Dense, ...) raise ``ValueError`` naming the module.
    """
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return None
    modules = read_json(modules_file)
    transformer_dir, pooling, normalize = None, None, False
    for entry in modules:
        kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
        path = root / str(entry.get("path", ""))
        if kind == "Transformer":
            transformer_dir = path
        elif kind == "Pooling":
            conf = read_json(path / "config.json")
            modes = [mode for key, mode in _ST_MODES.items() if conf.get(key)]
            if len(modes) != 1 or modes[0] == "weightedmean":
                raise ValueError(f"{path / 'config.json'}: unsupported sentence-transformers pooling {modes}")
            pooling = modes[0]
        elif kind == "Normalize":
            normalize = True
        else:
            raise ValueError(
                f"{modules_file}: unsupported sentence-transformers module {entry.get('type')!r}"
            )
    if transformer_dir is None or pooling is None:
        raise ValueError(f"{modules_file}: needs a Transformer and a Pooling module")
    max_len, lower = None, False
    st_conf = transformer_dir / "sentence_bert_config.json"
    if st_conf.is_file():
        conf = read_json(st_conf)
        max_len = conf.get("max_seq_length")
        lower = bool(conf.get("do_lower_case", False))
    return SentenceTransformersInfo(transformer_dir, pooling, normalize, max_len, lower)


def _resolve_local(name_or_path: str, revision: str | None) -> Path | None:
    """A local directory as is; a hub id → its cached/downloaded snapshot when it has modules.json."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import hf_hub_download

        modules = hf_hub_download(name_or_path, "modules.json", revision=revision)
    except Exception:  # not a sentence-transformers repo, or offline: treat as a plain model
        return None
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name_or_path, revision=revision)) if modules else None


def _text_model_class(config: Any, with_projection: bool = False) -> Any:
    import transformers as tf

    if isinstance(config, (tf.CLIPConfig, tf.CLIPTextConfig)):
        return tf.CLIPTextModelWithProjection if with_projection else tf.CLIPTextModel
    if isinstance(config, (tf.SiglipConfig, tf.SiglipTextConfig)):
        return tf.SiglipTextModel
    if isinstance(config, (tf.Siglip2Config, tf.Siglip2TextConfig)):
        return tf.Siglip2TextModel
    if isinstance(config, (tf.AlignConfig, tf.AlignTextConfig)):
        return tf.AlignTextModel
    return tf.AutoModel


class HFTextEncoder(TextEncoder):
    """A ``transformers`` text encoder with its tokenizer → pooled features (B, feature_dim)."""

    model: Any  # a transformers PreTrainedModel

    def __init__(self, cfg: HFTextConfig, assets_dir: Path | None = None) -> None:
        super().__init__()
        import transformers as tf

        self.cfg = cfg
        saved = assets_dir is not None and (assets_dir / TOWER_FILE).is_file()
        if saved:
            assert assets_dir is not None
            meta = read_json(assets_dir / TOWER_FILE)
            source, st = assets_dir, None
            pooling, normalize, max_length = meta["pooling"], bool(meta["normalize"]), meta["max_length"]
            lowercase = None
        else:
            local = _resolve_local(cfg.name_or_path, cfg.revision)
            st = read_sentence_transformers_dir(local) if local is not None else None
            source = st.transformer_dir if st is not None else Path(cfg.name_or_path)
            max_length = cfg.max_length or (st.max_seq_length if st is not None else None)
            lowercase = True if (st is not None and st.do_lower_case) else None
        with _quiet_transformers():
            config = tf.AutoConfig.from_pretrained(
                str(source), **({} if saved or not cfg.revision else {"revision": cfg.revision}),
                trust_remote_code=cfg.trust_remote_code,
            )
        is_clip = isinstance(config, (tf.CLIPConfig, tf.CLIPTextConfig))
        if cfg.with_projection and not is_clip:
            raise ValueError(
                f"text.hf.with_projection applies to CLIP checkpoints only, not {type(config).__name__}"
            )
        if cfg.with_projection and cfg.pooling not in ("default", "pooler"):
            raise ValueError("text.hf.with_projection uses CLIP's own EOS pooling; keep pooling=default")
        model_cls = _text_model_class(config, cfg.with_projection)
        self.model = _load_hf_model(
            model_cls,
            str(source),
            None if saved else cfg.revision,
            cfg.pretrained,
            assets_dir if saved else None,
            cfg.trust_remote_code,
        )
        self.is_clip = is_clip
        self.is_siglip = isinstance(config, (tf.SiglipConfig, tf.SiglipTextConfig, tf.Siglip2Config,
                                             tf.Siglip2TextConfig))
        if not saved:
            if cfg.pooling != "default":
                pooling = cfg.pooling
            elif st is not None:
                pooling = st.pooling
            else:
                pooling = "pooler" if (self.is_clip or self.is_siglip) else "cls"
            normalize = (
                cfg.normalize if cfg.normalize is not None else (st.normalize if st is not None else False)
            )
        self.pooling: str = pooling
        self.normalize: bool = normalize
        if self.pooling == "pooler" and cfg.hidden_layers is not None:
            raise ValueError(
                "text.hidden_layers averages hidden states before pooling; it cannot combine with pooling=pooler"
            )
        if self.is_siglip and self.pooling == "pooler" and cfg.padding != "max_length":
            raise ValueError(
                "SigLIP text pools the last token: set text.padding: max_length (as SigLIP was trained)"
            )
        self.tokenizer = HFTokenizer(source, max_length, cfg.padding, lowercase=lowercase,
                                     trust_remote_code=cfg.trust_remote_code)
        self.max_length = self.tokenizer.max_length
        head = getattr(self.core, "head", None)
        if cfg.with_projection:
            self.feature_dim = int(self.model.config.projection_dim)
        elif self.pooling == "pooler" and isinstance(head, nn.Linear):
            self.feature_dim = int(head.out_features)
        else:
            self.feature_dim = int(self.model.config.hidden_size)
        if cfg.grad_checkpointing:
            _enable_hf_checkpointing(self.model, "text")
        self._unused: list[nn.Module] = []
        if self.pooling != "pooler":
            for name in ("pooler", "head"):
                module = getattr(self.core, name, None)
                if isinstance(module, nn.Module) and any(True for _ in module.parameters()):
                    self._unused.append(module)
        for module in self._unused:
            for p in module.parameters():
                p.requires_grad_(False)

    @property
    def core(self) -> Any:
        """The backbone module (``text_model`` inside CLIPTextModelWithProjection)."""
        return getattr(self.model, "text_model", self.model)

    def unused_parameter_names(self) -> list[str]:
        """Parameters the configured pooling never uses (frozen at construction)."""
        ids = {id(p) for m in self._unused for p in m.parameters()}
        return [n for n, p in self.named_parameters() if id(p) in ids]

    def layer_groups(self) -> list[nn.Module]:
        m = self.core
        names = ("final_layer_norm", "pooler", "head")
        tail = _group(*(getattr(m, a, None) for a in names), getattr(self.model, "text_projection", None))
        groups = [_get(m, "embeddings"), *_layer_list(m)]
        if isinstance(tail, nn.ModuleList) and len(tail) == 0:
            return groups
        return [*groups, tail]

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(check_texts(texts))

    def save_assets(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(str(directory))
        self.tokenizer.save(directory)
        atomic_write_json(
            directory / TOWER_FILE,
            {"pooling": self.pooling, "normalize": self.normalize, "max_length": self.max_length},
        )

    def forward(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Tokens (B, T) → pooled (and, if configured, L2-normalised) features (B, feature_dim)."""
        ids = tokens["input_ids"]
        mask = tokens.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(ids)
        need_hidden = self.cfg.hidden_layers is not None
        out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=need_hidden)
        if self.cfg.with_projection:
            x = out.text_embeds
        elif self.pooling == "pooler":
            x = out.pooler_output
        else:
            if self.cfg.hidden_layers is not None:
                states = out.hidden_states
                hidden = torch.stack([states[i] for i in self.cfg.hidden_layers]).mean(dim=0)
            else:
                hidden = out.last_hidden_state
            valid = mask.bool()
            if self.pooling == "mean_sqrt_len":
                w = valid.to(hidden.dtype).unsqueeze(-1)
                x = (hidden * w).sum(1) / w.sum(1).clamp_min(1.0).sqrt()
            else:
                x = pool_tokens(hidden, valid, self.pooling)
        return F.normalize(x, dim=-1) if self.normalize else x
