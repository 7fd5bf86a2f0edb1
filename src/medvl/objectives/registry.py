"""Plain-dict registry: objective ``kind`` (as written in config) → term class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medvl.config.objective import TermOptions
from medvl.objectives.base import ObjectiveTerm
from medvl.objectives.captioning import CaptionLoss
from medvl.objectives.contrastive import ClipLoss, SigLipLoss, TripletLoss
from medvl.objectives.label_aware import DLILPLoss, PrototypeBCELoss, UniCLLoss
from medvl.objectives.supervised import BCELoss, CrossEntropyLoss, MaskedBCELoss, MSELoss
from medvl.objectives.unimodal import MaskedImageContrastiveLoss, SimCLRLoss

__all__ = ["OBJECTIVES", "build_term"]

OBJECTIVES: dict[str, type[ObjectiveTerm]] = {
    cls.kind: cls
    for cls in (
        ClipLoss,
        SigLipLoss,
        TripletLoss,
        BCELoss,
        MaskedBCELoss,
        CrossEntropyLoss,
        MSELoss,
        UniCLLoss,
        PrototypeBCELoss,
        DLILPLoss,
        SimCLRLoss,
        MaskedImageContrastiveLoss,
        CaptionLoss,
    )
}


def build_term(
    kind: str, options: TermOptions | Mapping[str, Any] | None = None, name: str | None = None
) -> ObjectiveTerm:
    """Instantiate the term registered as ``kind``; unknown kinds list the known ones."""
    try:
        cls = OBJECTIVES[kind]
    except KeyError:
        raise ValueError(
            f"unknown objective kind {kind!r}; known kinds: {', '.join(sorted(OBJECTIVES))}"
        ) from None
    return cls(options, name=name)
