"""medvl.objectives: named loss terms and their weighted sum.

Every term is a parameter-free ``nn.Module`` with ``forward(outputs, batch) -> {"loss": …, …}``
reading the model outputs dict and the batch (see ``docs/objectives.md``);
:class:`CompositeObjective` returns ``{"total": Σ w·term, "<name>": term, …}``.
"""

from medvl.objectives.base import (
    MissingInputError,
    NoNegativeError,
    NoNegativeWarning,
    ObjectiveInputError,
    ObjectiveTerm,
)
from medvl.objectives.captioning import CaptionLoss, caption_loss
from medvl.objectives.composite import CompositeObjective, build_objective
from medvl.objectives.contrastive import ClipLoss, SigLipLoss, TripletLoss, clip_loss, siglip_loss
from medvl.objectives.gradient_probe import GradientProbe
from medvl.objectives.label_aware import DLILPLoss, PrototypeBCELoss, UniCLLoss, unicl_loss
from medvl.objectives.registry import OBJECTIVES, build_term
from medvl.objectives.supervised import (
    BCELoss,
    CrossEntropyLoss,
    MaskedBCELoss,
    MSELoss,
    masked_bce_with_logits,
)
from medvl.objectives.unimodal import MaskedImageContrastiveLoss, SimCLRLoss, nt_xent_loss

__all__ = [
    "OBJECTIVES",
    "BCELoss",
    "CaptionLoss",
    "ClipLoss",
    "CompositeObjective",
    "CrossEntropyLoss",
    "DLILPLoss",
    "GradientProbe",
    "MSELoss",
    "MaskedBCELoss",
    "MaskedImageContrastiveLoss",
    "MissingInputError",
    "NoNegativeError",
    "NoNegativeWarning",
    "ObjectiveInputError",
    "ObjectiveTerm",
    "PrototypeBCELoss",
    "SigLipLoss",
    "SimCLRLoss",
    "TripletLoss",
    "UniCLLoss",
    "build_objective",
    "build_term",
    "caption_loss",
    "clip_loss",
    "masked_bce_with_logits",
    "nt_xent_loss",
    "siglip_loss",
    "unicl_loss",
]
