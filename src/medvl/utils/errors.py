"""The root of medvl's exception hierarchy.

``MedvlError`` is the base of every error medvl raises on purpose. ``UserInputError`` marks a
configuration or data problem the user can fix (a bad config key, a missing or corrupt file, a
wrong label): its message names the file, record or key, and the command line prints it as
``error: <message>`` and exits with code 2, without a traceback. Domain errors
(``ConfigError``, ``ManifestError``, ``ImageLoadError``, ``CheckpointError``, …) subclass it and
keep their historical built-in base (``ValueError``, ``RuntimeError``, …) so existing
``except`` clauses still catch them.
"""

from __future__ import annotations

__all__ = ["EXIT_USER_ERROR", "InvalidArgumentError", "MedvlError", "UserInputError"]

#: Exit code of the command line for a :class:`UserInputError` (configuration or data error).
EXIT_USER_ERROR = 2


class MedvlError(Exception):
    """Base class of the errors medvl raises deliberately."""


class UserInputError(MedvlError):
    """A configuration or data error the user can fix; the message names the file, record or key."""


class InvalidArgumentError(UserInputError, ValueError):
    """An argument or option value the user chose is out of range (e.g. a split fraction ≥ 1)."""
