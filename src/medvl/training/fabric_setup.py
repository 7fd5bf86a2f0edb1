"""Build and launch a Lightning Fabric from :class:`~medvl.config.training.TrainConfig`.

Multi-device runs: either start the script under ``torchrun`` (Fabric reads the environment)
or let Fabric's own launcher start the processes (``devices: 2`` on one machine re-runs the
command once per device). ``ddp_spawn`` starts processes with ``multiprocessing``.
"""

from __future__ import annotations

from typing import Any

from lightning_fabric import Fabric

from medvl.config.training import TrainConfig

__all__ = ["FABRIC_PRECISION", "build_fabric"]

#: medvl precision names → Fabric precision names.
FABRIC_PRECISION: dict[str, Any] = {"32": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed"}


def build_fabric(cfg: TrainConfig, *, launch: bool = True) -> Fabric:
    """A Fabric for ``cfg`` (accelerator, devices, strategy, nodes, precision), launched unless asked not to."""
    fabric = Fabric(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        num_nodes=cfg.num_nodes,
        precision=FABRIC_PRECISION[cfg.precision],
    )
    if launch:
        fabric.launch()
    return fabric
