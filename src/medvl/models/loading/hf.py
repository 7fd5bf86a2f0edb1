"""Hugging Face vision–language checkpoints, embedded exactly as ``transformers`` does.

Any ``transformers`` model with ``get_image_features`` and ``get_text_features`` — CLIP (and the
CLIP checkpoints PubMedCLIP, PLIP, MetaCLIP, LAION), MetaCLIP 2, SigLIP, SigLIP 2 (fixed
resolution and NaFlex), ALIGN — is called through those two public methods, on the family's
own preprocessing:

* images: the checkpoint's image processor (``AutoImageProcessor``: its resize, crop, rescale,
  normalisation; SigLIP 2 NaFlex patches + ``pixel_attention_mask`` + ``spatial_shapes``), fed the
  decoded 8-bit RGB images;
* text: the checkpoint's tokenizer with the family's rule (:data:`FAMILY_TEXT_RULES`): the
  processor's own ``text_kwargs`` defaults where it has them (SigLIP 2, ALIGN: pad to 64),
  SigLIP's documented ``padding="max_length"`` (64) and, for both SigLIPs, no attention mask
  (they were trained without one), otherwise padding to the longest caption with the attention
  mask (CLIP's usage). Captions longer than ``max_length`` tokens are truncated.

``image_features``/``text_features`` (pre-projection) are the inputs of the family's own
projection layers (``visual_projection``/``text_projection``), captured with a forward hook while
the public method runs; a family without a projection (SigLIP, ALIGN's image side) returns its
pooled output as both. Nothing in the model directory is executed unless ``trust_remote_code``.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvl.models.loading.base import InputKind, ModelInfo, ModelLoadError, as_pil_images, weights_hashes
from medvl.utils.compat import MissingExtraError

__all__ = ["FAMILY_TEXT_RULES", "HFVisionLanguageModel", "TextRule", "check_remote_code"]


@dataclass(frozen=True)
class TextRule:
    """How a family tokenizes: ``padding`` (``longest`` | ``max_length``), ``max_length`` (None = the
    processor's default or the text tower's position count) and whether the attention mask is passed."""

    padding: str
    max_length: int | None
    attention_mask: bool
    source: str


#: Family (the config's ``model_type``) → its text rule; families not listed use ``_DEFAULT_RULE``.
FAMILY_TEXT_RULES: dict[str, TextRule] = {
    "siglip": TextRule("max_length", 64, False, "SigLIP model card / big_vision: pad to 64, no attention mask"),
    "siglip2": TextRule("max_length", 64, False, "Siglip2Processor defaults (pad to 64); no attention mask"),
    "align": TextRule("max_length", 64, True, "AlignProcessor defaults (pad to 64)"),
}
_DEFAULT_RULE = TextRule("longest", None, True, "transformers usage (padding=True, attention mask)")


def check_remote_code(directory: Path, trust_remote_code: bool) -> bool:
    """True when ``directory`` ships its own code (``auto_map`` in its configs); refuse it unless trusted."""
    import json

    found: list[str] = []
    for name in ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json"):
        path = directory / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("auto_map"):
                found.append(name)
    if found and not trust_remote_code:
        raise ModelLoadError(
            f"{directory}: the model ships its own Python code (auto_map in {', '.join(found)}); medvl does not "
            "run code from a model directory unless you allow it: pass --trust-remote-code (Python: "
            "trust_remote_code=True) after reading that code"
        )
    return bool(found)


def _output_tensor(out: Any) -> torch.Tensor:
    """``get_*_features`` return a tensor (older transformers) or an output whose ``pooler_output`` it is."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if not isinstance(pooled, torch.Tensor):
        raise ModelLoadError(f"unexpected get_*_features output {type(out).__name__} (no pooler_output)")
    return pooled


@contextmanager
def _capture_input(module: Any, store: list[torch.Tensor]) -> Iterator[None]:
    """Record the input of ``module`` (a projection layer) while the block runs."""
    if not isinstance(module, nn.Module):
        yield
        return
    handle = module.register_forward_pre_hook(lambda _m, args: store.append(args[0]))
    try:
        yield
    finally:
        handle.remove()


def _jsonable(value: Any) -> Any:
    """Processor settings as JSON: SizeDict/dataclasses → dicts without None, tuples → lists, enums → names."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items() if v is not None}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (int, float, bool, str)):
        return value
    return getattr(value, "name", None) or str(value)


def _accepted(method: Any) -> set[str]:
    return set(inspect.signature(method).parameters)


def _load_tokenizer(root: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(root), trust_remote_code=trust_remote_code)
    except (ImportError, ValueError, OSError) as exc:
        needs_sp = (root / "spiece.model").is_file() or "sentencepiece" in str(exc).lower()
        if needs_sp and importlib.util.find_spec("sentencepiece") is None:
            raise MissingExtraError(
                f"{root}: its tokenizer (spiece.model) needs sentencepiece, which is not installed; "
                "install it with: pip install 'medvl[siglip]'"
            ) from None
        files = sorted(p.name for p in root.iterdir() if "token" in p.name or p.suffix in (".model", ".txt"))
        raise ModelLoadError(f"{root}: cannot load its tokenizer ({type(exc).__name__}: {exc}); tokenizer files "
                             f"found: {files or 'none'}") from None


def _processor_text_defaults(root: Path, trust_remote_code: bool) -> tuple[str | None, dict[str, Any]]:
    """The text settings the family's processor applies when called without options: its class
    defaults (e.g. AlignProcessor: pad to 64) merged with the saved tokenizer's own kwargs, exactly as
    ``processor(text=...)`` merges them; ({}) when the directory has no processor."""
    try:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(str(root), trust_remote_code=trust_remote_code)
    except Exception:  # no processor for this directory: the tokenizer and the family rule decide
        return None, {}
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "_merge_kwargs"):
        return None, {}
    try:
        merged = processor._merge_kwargs(tokenizer_init_kwargs=processor.tokenizer.init_kwargs)
        text = dict(merged.get("text_kwargs") or {})
    except Exception:
        defaults = getattr(type(processor), "text_kwargs", None)
        text = dict(defaults) if isinstance(defaults, dict) else {}
    return type(processor).__name__, {k: text[k] for k in ("padding", "max_length") if text.get(k) is not None}


class HFVisionLanguageModel:
    """A local ``transformers`` vision–language checkpoint (see the module docstring)."""

    input_kind: InputKind = "raw"

    def __init__(self, directory: str | Path, *, device: str = "cpu", trust_remote_code: bool = False,
                 metadata: dict[str, Any] | None = None) -> None:
        from transformers import AutoImageProcessor, AutoModel

        from medvl.models.encoders.hf import _quiet_transformers

        root = Path(directory)
        self.trust_remote_code = bool(trust_remote_code)
        remote = check_remote_code(root, self.trust_remote_code)
        with _quiet_transformers():
            model = AutoModel.from_pretrained(str(root), trust_remote_code=self.trust_remote_code)
        missing = [m for m in ("get_image_features", "get_text_features") if not callable(getattr(model, m, None))]
        if missing:
            model_type = getattr(model.config, "model_type", "?")
            raise ModelLoadError(
                f"{root}: a {type(model).__name__} (model_type {model_type!r}) has no {' and no '.join(missing)}: "
                "it is not a vision–language model with a joint image–text space (e.g. a plain image or text "
                "backbone), so there is nothing to evaluate with image–text tasks. Use it as a training tower "
                f"(model.vision: {{kind: hf, name_or_path: {root}}}) or load a CLIP/SigLIP/ALIGN-style checkpoint"
            )
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.family = str(getattr(model.config, "model_type", type(model).__name__))
        try:
            self.image_processor = AutoImageProcessor.from_pretrained(str(root), trust_remote_code=self.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{root}: no usable image processor (preprocessor_config.json / "
                                 f"processor_config.json): {exc}") from None
        self.tokenizer = _load_tokenizer(root, self.trust_remote_code)
        processor_name, defaults = _processor_text_defaults(root, self.trust_remote_code)
        rule = FAMILY_TEXT_RULES.get(self.family, _DEFAULT_RULE)
        text_cfg = getattr(model.config, "text_config", model.config)
        positions = int(getattr(text_cfg, "max_position_embeddings", 0) or 0) or None
        max_length = defaults.get("max_length") or rule.max_length
        model_max = getattr(self.tokenizer, "model_max_length", None)
        if max_length is None:
            candidates = [v for v in (positions, model_max) if isinstance(v, int) and 0 < v < 100_000]
            max_length = min(candidates) if candidates else 77
        if positions is not None:  # never more tokens than the text tower has positions (a 32-position CLIP)
            max_length = min(int(max_length), positions)
        self.max_length = int(max_length)
        self.padding = str(defaults.get("padding") or rule.padding)
        self.text_rule = TextRule(self.padding, self.max_length, rule.attention_mask, rule.source)
        self._image_args = _accepted(model.get_image_features)
        self._text_args = _accepted(model.get_text_features)
        self.identity = {"format": "hf", "family": self.family, "path": str(root), "class": type(model).__name__,
                         "weights": weights_hashes(root), "trust_remote_code": self.trust_remote_code}
        scale = getattr(model, "logit_scale", None)
        self.logit_scale = float(scale.exp().detach()) if isinstance(scale, torch.Tensor) else None
        self.has_text = True
        self._info = ModelInfo(
            format="hf", family=self.family, path=str(root),
            towers={"vision": type(getattr(model, "vision_model", model)).__name__,
                    "text": type(getattr(model, "text_model", model)).__name__},
            embed_dim=None,
            image_preprocessing={"by": type(self.image_processor).__name__, **self._image_settings()},
            text_preprocessing={"tokenizer": type(self.tokenizer).__name__, "max_length": self.max_length,
                                "padding": self.padding, "truncation": True,
                                "attention_mask": rule.attention_mask, "rule": rule.source,
                                "processor": processor_name},
            trust_remote_code=self.trust_remote_code,
            extra={"model_class": type(model).__name__, "ships_code": remote,
                   "dtype": str(next(model.parameters()).dtype).replace("torch.", "")},
        )

    def _image_settings(self) -> dict[str, Any]:
        keys = ("size", "crop_size", "do_resize", "do_center_crop", "resample", "do_rescale", "rescale_factor",
                "do_normalize", "image_mean", "image_std", "patch_size", "max_num_patches", "do_convert_rgb")
        out: dict[str, Any] = {}
        for key in keys:
            value = getattr(self.image_processor, key, None)
            if value is not None:
                out[key] = _jsonable(value)
        return out

    def info(self) -> ModelInfo:
        if self._info.embed_dim is None:
            self._info.embed_dim = int(self.encode_texts(["a"])[0].shape[-1])
        return self._info

    def image_transform(self) -> None:
        return None  # the family's image processor runs inside encode_images

    def image_inputs(self, images: list[Any]) -> dict[str, torch.Tensor]:
        """The image processor's tensors for ``get_image_features`` (on the model's device)."""
        processed = self.image_processor(images=images, return_tensors="pt")
        return {k: v.to(self.device) for k, v in processed.items() if k in self._image_args}

    def text_inputs(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The tokenizer's tensors for ``get_text_features`` under the family's text rule."""
        tokens = self.tokenizer(list(texts), padding=self.padding, truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        keep = {k for k in self._text_args if k != "attention_mask" or self.text_rule.attention_mask}
        return {k: v.to(self.device) for k, v in tokens.items() if k in keep}

    @torch.no_grad()
    def encode_images(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        inputs = self.image_inputs(as_pil_images(batch, f"{self.family} ({self.identity['path']})"))
        seen: list[torch.Tensor] = []
        with _capture_input(getattr(self.model, "visual_projection", None), seen):
            emb = _output_tensor(self.model.get_image_features(**inputs))
        return {"image_emb": emb, "image_features": seen[-1] if seen else emb}

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        seen: list[torch.Tensor] = []
        with _capture_input(getattr(self.model, "text_projection", None), seen):
            emb = _output_tensor(self.model.get_text_features(**self.text_inputs(texts)))
        return emb, (seen[-1] if seen else emb)
