"""medvl: train, evaluate and diagnose vision-language models for medical imaging."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medvl")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.1.0"

__all__ = ["__version__"]
