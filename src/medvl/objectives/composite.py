"""The weighted sum of named terms that the trainer optimises.

``CompositeObjective(outputs, batch)`` returns ``{"total": Σ_k w_k·L_k, "<name>": L_k, "<name>.<sub>": …}``:
every term's unweighted value under its name, its diagnostics/sub-terms under
``<name>.<key>``, and the weighted total. Terms whose final weight is 0 (e.g. the task term at
λ = 1) are left out of ``total`` — so a NaN there cannot poison it and ``total`` equals the
other term exactly — and are still computed without gradient for the logs unless
``log_zero_weight_terms`` is off. ``balance: λ`` in the config only changes the weights
(see :class:`medvl.config.objective.ObjectiveConfig`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from medvl.config.objective import ObjectiveConfig
from medvl.objectives.base import ObjectiveTerm, lookup
from medvl.objectives.registry import build_term

__all__ = ["CompositeObjective", "build_objective"]


class CompositeObjective(nn.Module):
    """``Σ weight·term`` over named terms; see the module docstring for the returned dict."""

    def __init__(
        self,
        terms: Sequence[tuple[ObjectiveTerm, float]],
        *,
        log_zero_weight_terms: bool = True,
    ) -> None:
        super().__init__()
        if not terms:
            raise ValueError("an objective needs at least one term")
        names = [term.name for term, _ in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"objective term names must be unique, got {names}")
        if "total" in names:
            raise ValueError("'total' is reserved for the weighted sum")
        for term, weight in terms:
            if not weight >= 0.0 or weight == float("inf"):
                raise ValueError(
                    f"objective term {term.name!r}: weight must be finite and >= 0, got {weight}"
                )
        if all(weight == 0.0 for _, weight in terms):
            raise ValueError("every objective term has weight 0; nothing would be optimised")
        self.terms = nn.ModuleDict({term.name: term for term, _ in terms})
        self.weights: dict[str, float] = {term.name: float(weight) for term, weight in terms}
        self.log_zero_weight_terms = log_zero_weight_terms

    @classmethod
    def from_config(cls, config: ObjectiveConfig) -> CompositeObjective:
        """Build the terms of ``config`` with their resolved (``balance``-adjusted) weights."""
        weights = config.resolved_weights()
        terms = [(build_term(t.kind, t.parsed_options(), name=t.name), weights[t.name]) for t in config.terms]
        return cls(terms, log_zero_weight_terms=config.log_zero_weight_terms)

    def required_outputs(self) -> tuple[str, ...]:
        """Model-output keys read by any term (in order of first use)."""
        keys: dict[str, None] = {}
        for term in self.terms.values():
            keys.update(dict.fromkeys(term.required_outputs()))  # type: ignore[operator]
        return tuple(keys)

    def required_batch(self) -> tuple[str, ...]:
        """Batch keys read by any term."""
        keys: dict[str, None] = {}
        for term in self.terms.values():
            keys.update(dict.fromkeys(term.required_batch()))  # type: ignore[operator]
        return tuple(keys)

    def needs_second_view(self) -> bool:
        """Whether any computed term reads a second augmented view (the data then makes one)."""
        return any(
            term.needs_second_view()  # type: ignore[operator]
            for name, term in self.terms.items()
            if self.weights[name] > 0.0 or self.log_zero_weight_terms
        )

    def weighted_terms(self) -> list[str]:
        """Names of the terms that enter ``total`` (weight > 0)."""
        return [name for name, weight in self.weights.items() if weight > 0.0]

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        result: dict[str, Tensor] = {}
        total: Tensor | None = None
        for name, term in self.terms.items():
            weight = self.weights[name]
            if weight == 0.0:
                if not self.log_zero_weight_terms:
                    continue
                with torch.no_grad():
                    values = term(outputs, batch)
            else:
                values = term(outputs, batch)
            loss = values["loss"]
            result[name] = loss
            for key, value in values.items():
                if key != "loss":
                    result[f"{name}.{key}"] = value
            if weight != 0.0:
                contribution = loss if weight == 1.0 else weight * loss
                total = contribution if total is None else total + contribution
        assert total is not None  # at least one positive weight (checked in __init__)
        result["total"] = total
        return result

    def describe_nonfinite(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any], losses: Mapping[str, Tensor] | None = None
    ) -> str:
        """A message for a non-finite loss: which terms, which inputs, and the record ids of bad rows.

        Call it only after a non-finite ``total`` (it synchronises with the device). Per-record
        inputs (first dimension = batch size) name up to 10 ``batch['ids']`` with non-finite values.
        """
        parts: list[str] = []
        if losses is not None:
            bad_terms = [
                k for k, v in losses.items() if isinstance(v, Tensor) and not bool(torch.isfinite(v).all())
            ]
            if bad_terms:
                parts.append("non-finite terms: " + ", ".join(bad_terms))
        ids = batch.get("ids")
        for key in self.required_outputs():
            try:
                value = lookup(outputs, key)
            except KeyError:
                continue
            if not isinstance(value, Tensor) or not value.is_floating_point():
                continue
            finite = torch.isfinite(value.detach())
            if bool(finite.all()):
                continue
            if ids is not None and value.ndim >= 1 and value.shape[0] == len(ids):
                rows = (~finite.reshape(value.shape[0], -1).all(dim=1)).nonzero().squeeze(1).tolist()
                shown = [str(ids[r]) for r in rows[:10]]
                more = f" (+{len(rows) - 10} more)" if len(rows) > 10 else ""
                parts.append(f"model output {key!r} is non-finite for records {shown}{more}")
            else:
                parts.append(f"model output {key!r} holds non-finite values")
        return "; ".join(parts) if parts else "no non-finite objective input found"

    def extra_repr(self) -> str:
        return "weights=" + ", ".join(f"{n}={w:g}" for n, w in self.weights.items())


def build_objective(config: ObjectiveConfig | Mapping[str, Any]) -> CompositeObjective:
    """``CompositeObjective`` from an ``ObjectiveConfig`` or a plain mapping (validated)."""
    if not isinstance(config, ObjectiveConfig):
        from medvl.config.loading import config_from_dict

        config = config_from_dict(config, ObjectiveConfig, source="objective")
    return CompositeObjective.from_config(config)
