"""medvl: train, evaluate and diagnose vision-language models for medical imaging."""

from importlib.metadata import PackageNotFoundError, version

from medvl.utils.compat import install_torchvision_hook

try:
    __version__ = version("medvl")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.1.0"

# PyPI's torchvision is a CUDA build that cannot import on a CPU torch; the hook mends that the
# first time anything imports it (see medvl.utils.compat). It imports nothing until then.
install_torchvision_hook()

__all__ = ["__version__"]
