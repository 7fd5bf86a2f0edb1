"""Gradient-balance probe: each term's gradient norm on the shared trainable parameters, and their ratios.

The Balancing Act's λ is only meaningful when the terms' gradients have comparable scale; this
probe measures it. ``GradientProbe.measure(losses, params)`` differentiates each unweighted term
separately with ``torch.autograd.grad(..., retain_graph=True)``, so it never writes ``.grad``
and the training backward that follows is unchanged. Run it every N steps (``due(step)``),
after the forward and before ``backward``.

Returned (plain floats, the format the sweep reports read)::

    {"<term>": ‖∇_θ L_term‖₂, "ratio/<a>/<b>": ‖∇L_a‖/‖∇L_b‖, "cos/<a>/<b>": cos(∇L_a, ∇L_b),
     "n_params": number of scalar parameters measured}

``scope="shared"``: θ = the trainable tensors that **every** probed term reaches (e.g. the vision
backbone shared by CLIP and the classifier head, not the head itself); ``scope="all"``: every
trainable tensor (unreached ones count as zero gradient). Norms are of the unweighted terms,
accumulated in float64. Under DDP the norms are this rank's local gradients. Under fp16 with a
GradScaler the losses are unscaled, so tiny gradients may underflow; bf16/fp32 are fine.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from medvl.config.objective import GradientProbeConfig

__all__ = ["GradientProbe"]


class GradientProbe:
    """Per-term gradient norms every ``every_n_steps`` steps (0 = never)."""

    def __init__(
        self, every_n_steps: int = 0, scope: str = "shared", terms: Sequence[str] | None = None
    ) -> None:
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        if scope not in ("shared", "all"):
            raise ValueError(f"scope must be 'shared' or 'all', got {scope!r}")
        self.every_n_steps = every_n_steps
        self.scope = scope
        self.terms = list(terms) if terms is not None else None

    @classmethod
    def from_config(cls, config: GradientProbeConfig) -> GradientProbe:
        return cls(config.every_n_steps, config.scope, config.terms)

    def due(self, step: int) -> bool:
        """True on steps 0, N, 2N, … when enabled."""
        return self.every_n_steps > 0 and step % self.every_n_steps == 0

    def measure(
        self,
        losses: Mapping[str, Tensor],
        params: Iterable[nn.Parameter] | nn.Module,
        weights: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        """Gradient norms of the selected terms in ``losses`` (e.g. the composite's output dict).

        Terms probed: ``self.terms`` if set, else the names in ``weights`` with weight > 0 (pass
        ``CompositeObjective.weights``), else every entry except ``total`` and ``<name>.<sub>``.
        """
        if isinstance(params, nn.Module):
            params = params.parameters()
        trainable = [p for p in params if p.requires_grad]
        if not trainable:
            raise ValueError("gradient probe: no trainable parameters")
        names = self._select(losses, weights)
        grads: dict[str, tuple[Tensor | None, ...]] = {}
        for name in names:
            loss = losses[name]
            if not loss.requires_grad:
                raise ValueError(
                    f"gradient probe: term {name!r} has no gradient graph (weight 0 or computed under no_grad)"
                )
            grads[name] = torch.autograd.grad(loss, trainable, retain_graph=True, allow_unused=True)
        if self.scope == "shared":
            keep = [i for i in range(len(trainable)) if all(grads[n][i] is not None for n in names)]
        else:
            keep = list(range(len(trainable)))
        result: dict[str, float] = {"n_params": float(sum(trainable[i].numel() for i in keep))}
        # accumulate squared norms and pairwise dot products tensor by tensor (float64, no concatenation)
        device = trainable[0].device
        squares = {n: torch.zeros((), dtype=torch.float64, device=device) for n in names}
        pairs = list(itertools.combinations(names, 2))
        dots = {pair: torch.zeros((), dtype=torch.float64, device=device) for pair in pairs}
        for i in keep:
            per_term = {n: grads[n][i] for n in names}
            for n, g in per_term.items():
                if g is not None:
                    squares[n] += g.detach().double().square().sum().to(device)
            for a, b in pairs:
                ga, gb = per_term[a], per_term[b]
                if ga is not None and gb is not None:
                    dots[(a, b)] += (ga.detach().double() * gb.detach().double()).sum().to(device)
        norms = {n: math.sqrt(float(squares[n])) for n in names}
        result.update(norms)
        for a, b in itertools.permutations(names, 2):
            result[f"ratio/{a}/{b}"] = _ratio(norms[a], norms[b])
        for a, b in pairs:
            denominator = norms[a] * norms[b]
            result[f"cos/{a}/{b}"] = float(dots[(a, b)]) / denominator if denominator > 0 else math.nan
        return result

    def _select(self, losses: Mapping[str, Tensor], weights: Mapping[str, float] | None) -> list[str]:
        if self.terms is not None:
            names = list(self.terms)
        elif weights is not None:
            names = [n for n, w in weights.items() if w > 0.0]
        else:
            names = [n for n in losses if n != "total" and "." not in n]
        missing = [n for n in names if n not in losses]
        if missing:
            raise KeyError(f"gradient probe: terms {missing} are not in the losses ({', '.join(losses)})")
        if not names:
            raise ValueError("gradient probe: no terms to probe")
        return names


def _ratio(a: float, b: float) -> float:
    if b == 0.0:
        return math.nan if a == 0.0 else math.inf
    return a / b
