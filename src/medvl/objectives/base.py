"""The interface every objective term implements, and input look-ups with errors that name the key.

A term is an ``nn.Module`` **without parameters**: everything trainable (projections, the
learnable logit scale and bias, class prototypes, the unimodal projectors ξ of SimCLR and
masked-image contrast) lives in the model, so the optimizer, checkpoints and freezing see it.
``forward(outputs, batch)`` reads tensors from the model outputs dict and the batch and returns
a dict whose ``"loss"`` entry is the scalar term; other entries are named diagnostics or
sub-terms (e.g. DLILP's ``bce`` and ``clip``).

Output keys are looked up flat first (``outputs["logits.isup"]``) and then as a dotted path into
nested mappings (``outputs["logits"]["isup"]``), so either layout of the model outputs works.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from medvl.config.objective import TermOptions, validate_term_options
from medvl.utils.errors import UserInputError

__all__ = [
    "MissingInputError",
    "NoNegativeError",
    "NoNegativeWarning",
    "ObjectiveInputError",
    "ObjectiveTerm",
    "lookup",
    "zero_loss",
]


class ObjectiveInputError(UserInputError, ValueError):
    """An objective's input is missing or has the wrong shape; the message names the term and key."""


class MissingInputError(ObjectiveInputError, KeyError):
    """A key an objective term needs is absent from the model outputs or the batch."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NoNegativeError(ObjectiveInputError):
    """A contrastive term found no negative for some rows of a training step (it would train nothing)."""


class NoNegativeWarning(UserWarning):
    """A contrastive term skipped rows without a negative (``on_missing_negative: warn``)."""


def lookup(container: Mapping[str, Any], key: str) -> Any:
    """``container[key]``, or the dotted path ``key`` through nested mappings; ``KeyError`` if neither."""
    if key in container:
        return container[key]
    node: Any = container
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _available(container: Mapping[str, Any]) -> str:
    keys: list[str] = []
    for name, value in container.items():
        if isinstance(value, Mapping):
            keys.extend(f"{name}.{sub}" for sub in value)
        else:
            keys.append(str(name))
    return ", ".join(sorted(keys)) or "(none)"


def zero_loss(*like: Tensor) -> Tensor:
    """An exact 0 that is connected to the graph of ``like`` (no NaN even if ``like`` holds NaN)."""
    total = like[0][:0].sum()
    for t in like[1:]:
        total = total + t[:0].sum()
    return total


class ObjectiveTerm(nn.Module):
    """Base class of the objective terms; subclasses set ``kind`` and ``Options`` and implement ``compute``."""

    kind: ClassVar[str]
    Options: ClassVar[type[TermOptions]]

    def __init__(
        self, options: TermOptions | Mapping[str, Any] | None = None, *, name: str | None = None
    ) -> None:
        super().__init__()
        if options is None:
            options = {}
        if isinstance(options, Mapping):
            options = validate_term_options(self.kind, dict(options))
        if not isinstance(options, self.Options):
            raise TypeError(
                f"{type(self).__name__} takes {self.Options.__name__}, got {type(options).__name__}"
            )
        self.options = options
        self.name = name if name is not None else self.kind
        #: training steps in which some row had no negative (``on_missing_negative: warn``)
        self.steps_without_negative = 0

    # -- declared inputs -----------------------------------------------------------------------
    def required_outputs(self) -> tuple[str, ...]:
        """Model-output keys this term reads."""
        return ()

    def required_batch(self) -> tuple[str, ...]:
        """Batch keys this term reads (dotted, e.g. ``labels.isup``)."""
        return ()

    def needs_second_view(self) -> bool:
        """Whether the data must carry a second augmented view of each image (``pixel_values_view2``)."""
        return False

    # -- look-ups ------------------------------------------------------------------------------
    def output(self, outputs: Mapping[str, Any], key: str) -> Tensor:
        """The tensor ``outputs[key]``; a missing key raises an error naming the term and the key."""
        try:
            value = lookup(outputs, key)
        except KeyError:
            raise MissingInputError(
                f"objective term {self.name!r} ({self.kind}) needs model output {key!r}; "
                f"the model returned: {_available(outputs)}"
            ) from None
        if not isinstance(value, Tensor):
            raise ObjectiveInputError(
                f"objective term {self.name!r}: model output {key!r} is a {type(value).__name__}, not a Tensor"
            )
        return value

    def batch_value(self, batch: Mapping[str, Any], key: str) -> Tensor:
        """The tensor ``batch[key]`` (dotted paths allowed); a missing key raises an error naming it."""
        try:
            value = lookup(batch, key)
        except KeyError:
            raise MissingInputError(
                f"objective term {self.name!r} ({self.kind}) needs batch[{key!r}]; the batch has: {_available(batch)}"
            ) from None
        if not isinstance(value, Tensor):
            raise ObjectiveInputError(
                f"objective term {self.name!r}: batch[{key!r}] is a {type(value).__name__}, not a Tensor"
            )
        return value

    def labels(self, batch: Mapping[str, Any], task: str) -> Tensor:
        """``batch['labels'][task]``."""
        return self.batch_value(batch, f"labels.{task}")

    def label_mask(self, batch: Mapping[str, Any], task: str, like: Tensor) -> Tensor:
        """``batch['label_mask'][task]`` as bool, or all-True shaped ``like`` when absent (manifest: absent = all)."""
        try:
            mask = lookup(batch, f"label_mask.{task}")
        except KeyError:
            return torch.ones_like(like, dtype=torch.bool)
        if not isinstance(mask, Tensor):
            raise ObjectiveInputError(
                f"objective term {self.name!r}: batch['label_mask'][{task!r}] is not a Tensor"
            )
        if mask.shape != like.shape:
            raise ObjectiveInputError(
                f"objective term {self.name!r}: label_mask.{task} has shape {tuple(mask.shape)} but "
                f"labels.{task} has shape {tuple(like.shape)}"
            )
        return mask.bool()

    def scalar_output(self, outputs: Mapping[str, Any], key: str) -> Tensor:
        """A scalar model output (``logit_scale``, ``logit_bias``); shape () or (1,) accepted."""
        value = self.output(outputs, key)
        if value.numel() != 1:
            raise ObjectiveInputError(
                f"objective term {self.name!r}: model output {key!r} must be a scalar, got shape {tuple(value.shape)}"
            )
        return value.reshape(())

    def embeddings(self, outputs: Mapping[str, Any], key: str, batch_size: int | None = None) -> Tensor:
        """A (B, D) embedding output; checks the rank and, when given, the batch size."""
        value = self.output(outputs, key)
        if value.ndim != 2:
            raise ObjectiveInputError(
                f"objective term {self.name!r}: model output {key!r} must be (B, D), got shape {tuple(value.shape)}"
            )
        if batch_size is not None and value.shape[0] != batch_size:
            raise ObjectiveInputError(
                f"objective term {self.name!r}: model output {key!r} has {value.shape[0]} rows, expected {batch_size}"
            )
        return value

    def check_negatives(
        self, n_missing: int, n_rows: int, batch: Mapping[str, Any], policy: str, remedy: str
    ) -> None:
        """Enforce the ``on_missing_negative`` policy for a step where ``n_missing`` of ``n_rows``
        rows had no negative.

        In training mode, ``error`` raises :class:`NoNegativeError` naming the term and the
        batch's record ids; ``warn`` counts the step in :attr:`steps_without_negative` and warns
        on the 1st, 2nd, 4th, 8th, … such step. In evaluation mode (validation loss) nothing is
        raised: the rows are left out and the count is returned by the term as a diagnostic.
        """
        if n_missing == 0 or not self.training:
            return
        ids = batch.get("ids")
        shown = f" (batch records {list(ids)[:8]})" if ids is not None else ""
        what = f"objective term {self.name!r} ({self.kind}): {n_missing} of {n_rows} rows have no negative{shown}"
        if policy == "error":
            raise NoNegativeError(
                f"{what}; it would contribute nothing for them. {remedy} Or set "
                f"on_missing_negative: warn in the term's options to skip such rows with a counted warning."
            )
        self.steps_without_negative += 1
        count = self.steps_without_negative
        if count & (count - 1) == 0:  # 1, 2, 4, 8, ...
            warnings.warn(f"{what}; skipped (step {count} with missing negatives so far)", NoNegativeWarning,
                          stacklevel=3)

    # -- computation ---------------------------------------------------------------------------
    def compute(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Named values of this term; ``"loss"`` is the scalar to weight and sum."""
        result = self.compute(outputs, batch)
        if "loss" not in result:  # pragma: no cover - programming error in a subclass
            raise RuntimeError(f"{type(self).__name__}.compute returned no 'loss'")
        return result

    def extra_repr(self) -> str:
        return f"name={self.name!r}, options={self.options!r}"
