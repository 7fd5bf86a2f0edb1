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
from medvl.objectives.base import ObjectiveTerm
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

    def extra_repr(self) -> str:
        return "weights=" + ", ".join(f"{n}={w:g}" for n, w in self.weights.items())


def build_objective(config: ObjectiveConfig | Mapping[str, Any]) -> CompositeObjective:
    """``CompositeObjective`` from an ``ObjectiveConfig`` or a plain mapping (validated)."""
    if not isinstance(config, ObjectiveConfig):
        from medvl.config.loading import config_from_dict

        config = config_from_dict(config, ObjectiveConfig, source="objective")
    return CompositeObjective.from_config(config)
