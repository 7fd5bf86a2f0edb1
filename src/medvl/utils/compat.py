"""Compatibility with optional third-party packages: the one place that works around their installs.

**torchvision on a CPU-only torch.** The Linux torchvision wheel on PyPI is a CUDA build: its
compiled extension (``torchvision/_C.so``) needs ``libtorch_cuda.so`` and fails to load on the
CPU torch wheel. torchvision then registers fake kernels for ``torchvision::nms`` without a
guard, so ``import torchvision`` raises ``RuntimeError: operator torchvision::nms does not
exist``, and with it everything that imports torchvision (timm, open_clip, torchmetrics,
lightning, the image processors and ``PreTrainedModel`` of transformers).

:func:`ensure_torchvision_importable` mends that and nothing else: when the compiled extension
**cannot** load, it defines the schemas of the two operators torchvision's Python code refers to
at import (``nms``, ``qnms``), so the package imports; its transforms and models work, its C++
ops (``torchvision.ops.nms``, ``roi_align``) and ``torchvision.io`` decoders do not (medvl reads
images with PIL). When the extension loads (a CUDA box, a CPU build of torchvision) it does
nothing. ``import medvl`` installs :func:`install_torchvision_hook`, a ``sys.meta_path`` entry
that runs the fix the first time anything imports torchvision (torch is not imported before
that), so a process that imports medvl first needs no further step.

:func:`import_optional` imports an extra (``timm``, ``open_clip``, ``sentencepiece``) after that
fix, or raises :class:`MissingExtraError` naming the ``pip install medvl[...]`` that provides it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from medvl.utils.errors import UserInputError

__all__ = [
    "EXTRAS",
    "MissingExtraError",
    "ensure_torchvision_importable",
    "import_optional",
    "install_torchvision_hook",
]

#: import name → the medvl extra that installs it
EXTRAS: dict[str, str] = {
    "open_clip": "openclip",
    "timm": "timm",
    "torchvision": "timm",
    "sentencepiece": "siglip",
}

_state: dict[str, Any] = {"library": None, "checked": False, "busy": False}


class MissingExtraError(UserInputError, ImportError):
    """An optional package medvl needs for this model is not installed (names the extra)."""


def _extension_path(package_dir: Path) -> Path | None:
    for pattern in ("_C.so", "_C.*.so", "_C.pyd", "_C*.so"):
        found = sorted(package_dir.glob(pattern))
        if found:
            return found[0]
    return None


def ensure_torchvision_importable() -> bool:
    """Make ``import torchvision`` work on a CPU torch when its compiled extension cannot load.

    Returns True when the operator schemas were defined (now or by an earlier call), False when
    nothing was needed (torchvision absent or already imported, or its extension loads).
    """
    if _state["library"] is not None:
        return True
    if _state["checked"] or "torchvision" in sys.modules:
        return False
    _state["busy"] = True
    try:
        spec = importlib.util.find_spec("torchvision")
    finally:
        _state["busy"] = False
    _state["checked"] = True
    if spec is None or not spec.submodule_search_locations:
        return False
    import torch

    extension = _extension_path(Path(next(iter(spec.submodule_search_locations))))
    if extension is not None:
        try:
            torch.ops.load_library(str(extension))
            return False  # the real operators are there
        except (OSError, ImportError, RuntimeError):
            pass
    library = torch.library.Library("torchvision", "DEF")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _state["library"] = library
    return True


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    """Runs :func:`ensure_torchvision_importable` before the first ``import torchvision``."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "torchvision" and not _state["busy"]:
            ensure_torchvision_importable()
            if self in sys.meta_path:
                sys.meta_path.remove(self)
        return None  # the normal finders import the package


def install_torchvision_hook() -> None:
    """Install the one-shot ``sys.meta_path`` hook (idempotent; a no-op once torchvision is imported)."""
    if "torchvision" in sys.modules or any(isinstance(f, _TorchvisionHook) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionHook())


def import_optional(name: str, purpose: str = "") -> ModuleType:
    """Import ``name`` (``timm``, ``open_clip``, ``sentencepiece``, ...) with the torchvision fix applied.

    Raises :class:`MissingExtraError` naming ``pip install 'medvl[<extra>]'`` when it is absent.
    """
    if name in ("timm", "open_clip", "torchvision"):
        ensure_torchvision_importable()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or name).split(".")[0]
        extra = EXTRAS.get(missing, EXTRAS.get(name, name))
        why = f" for {purpose}" if purpose else ""
        raise MissingExtraError(
            f"{missing} is needed{why} but is not installed; install it with: pip install 'medvl[{extra}]'"
        ) from exc
