"""Capture and restore every random number generator the trainer touches.

State is split into a JSON-able part (Python ``random``, NumPy's legacy global RNG) and
tensors (torch CPU and CUDA generator states) so that checkpoints hold no pickled objects.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["TorchRNGSnapshot", "capture_rng_state", "restore_rng_state"]


def capture_rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Return ``(json_state, tensor_state)`` of Python, NumPy, torch CPU and all CUDA generators."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    json_state: dict[str, Any] = {
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
        "numpy": {
            "name": np_name,
            "keys": np.asarray(np_keys).tolist(),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "cuda_devices": 0,
    }
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states = torch.cuda.get_rng_state_all()
        json_state["cuda_devices"] = len(states)
        for index, state in enumerate(states):
            tensors[f"torch_cuda_{index}"] = state
    return json_state, tensors


def restore_rng_state(json_state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = json_state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    npst = json_state["numpy"]
    np.random.set_state(
        (npst["name"], np.asarray(npst["keys"], dtype=np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"])
    )
    torch.set_rng_state(tensors["torch_cpu"].to(torch.uint8))
    n_cuda = int(json_state.get("cuda_devices", 0))
    if n_cuda and torch.cuda.is_available():
        states = [tensors[f"torch_cuda_{i}"].to(torch.uint8) for i in range(n_cuda)]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


class TorchRNGSnapshot:
    """The torch CPU generator and the current CUDA device's generator at one moment.

    Used to replay a forward pass with the same dropout / patch-dropout draws (feature-cache
    accumulation re-runs each micro-batch with gradients after a no-grad pass).
    """

    def __init__(self, device: torch.device) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda: torch.Tensor | None = None
        self.device = device
        if device.type == "cuda":
            self.cuda = torch.cuda.get_rng_state(device)

    def restore(self) -> None:
        """Put the generators back to the captured state."""
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
