"""medvl.models.encoders: tower backends (built-in tiny towers, Hugging Face, slide-level bags).

``hf`` is not imported here so that importing medvl.models does not import transformers.
"""

from medvl.models.encoders.base import ImageEncoder, TextEncoder
from medvl.models.encoders.patch_dropout import PatchDropout

__all__ = ["ImageEncoder", "PatchDropout", "TextEncoder"]
