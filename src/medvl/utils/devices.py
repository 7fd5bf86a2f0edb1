"""Device selection shared by every command: ``auto`` picks the best available accelerator.

``medvl train`` (``training.accelerator: auto``, through Lightning Fabric) and ``medvl evaluate``
(``device: auto``) resolve ``auto`` the same way: CUDA when available, else Apple MPS, else CPU.
"""

from __future__ import annotations

from medvl.utils.errors import InvalidArgumentError

__all__ = ["resolve_device"]


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` → ``"cuda"`` / ``"mps"`` / ``"cpu"`` (first available); any other torch device string
    (``"cpu"``, ``"cuda:1"``, ``"mps"``) is checked and returned unchanged.

    Raises :class:`~medvl.utils.errors.InvalidArgumentError` (a ``ValueError``) naming the device when it is not a torch device string or when CUDA/MPS is
    asked for but not available.
    """
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgumentError(f"device {device!r} is not a torch device (use auto, cpu, cuda, cuda:N or mps)") from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device {device!r}: CUDA is not available on this machine (use device=auto or cpu)")
    if parsed.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidArgumentError(f"device {device!r}: MPS is not available on this machine (use device=auto or cpu)")
    return device
