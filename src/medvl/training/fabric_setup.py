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


def _on_cpu(cfg: TrainConfig) -> bool:
    import torch

    if cfg.accelerator == "cpu":
        return True
    if cfg.accelerator != "auto":
        return False
    mps = getattr(torch.backends, "mps", None)
    return not torch.cuda.is_available() and not (mps is not None and mps.is_available())


def build_fabric(cfg: TrainConfig, *, launch: bool = True) -> Fabric:
    """A Fabric for ``cfg`` (accelerator, devices, strategy, nodes, precision), launched unless asked not to.

    ``16-mixed`` on a CPU is float16 autocast with a ``GradScaler`` (Fabric alone would silently
    switch to bf16): the fp16 path, loss scaling and skipped overflow steps included, runs as on a GPU.
    """
    from medvl.training.distributed import build_strategy

    precision: Any = FABRIC_PRECISION[cfg.precision]
    plugins: list[Any] = []
    if cfg.precision == "16-mixed" and _on_cpu(cfg):
        from lightning_fabric.plugins.precision.amp import MixedPrecision

        plugins.append(MixedPrecision("16-mixed", "cpu"))
        precision = None
    fabric = Fabric(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=build_strategy(cfg),
        num_nodes=cfg.num_nodes,
        precision=precision,
        plugins=plugins or None,
    )
    if launch:
        fabric.launch()
    return fabric
