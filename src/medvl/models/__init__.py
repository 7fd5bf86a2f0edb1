"""medvl.models: encoder towers, heads, freezing, frozen-tower caching and the ``DualEncoder``.

Entry points: :func:`build_model` (``ModelConfig`` → ``DualEncoder``),
:meth:`DualEncoder.from_pretrained` / :meth:`DualEncoder.save_pretrained`.
Hugging Face backends are imported lazily (only when an ``hf`` tower is built).
"""

from medvl.models.caching import FeatureCache
from medvl.models.dual_encoder import DualEncoder, build_model
from medvl.models.encoders.base import ImageEncoder, TextEncoder
from medvl.models.freezing import apply_freezing, count_parameters
from medvl.models.registry import (
    TEXT_ENCODERS,
    VISION_ENCODERS,
    register_text_encoder,
    register_vision_encoder,
)

__all__ = [
    "TEXT_ENCODERS",
    "VISION_ENCODERS",
    "DualEncoder",
    "FeatureCache",
    "ImageEncoder",
    "TextEncoder",
    "apply_freezing",
    "build_model",
    "count_parameters",
    "register_text_encoder",
    "register_vision_encoder",
]
