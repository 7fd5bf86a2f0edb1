"""Input checks shared by every alignment metric (scikit-learn style: fail early, name the problem).

All metrics take paired ``(n, d)`` arrays (numpy or torch): row ``i`` of the first array is
paired with row ``i`` of the second. The checks here turn them into CPU torch tensors of a
floating dtype (float32 stays float32, float64 stays float64, mixed inputs are promoted to
float64, half precisions become float32) without copying when no conversion is needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medvl.utils.errors import UserInputError

__all__ = [
    "AlignmentInputError",
    "AlignmentPreconditionError",
    "as_matrix",
    "check_finite_rows",
    "check_nonzero_rows",
    "check_paired",
    "l2_normalize_rows",
]

#: How many offending row indices an error message lists before summarising.
_MAX_LISTED_ROWS = 10


class AlignmentInputError(UserInputError, ValueError):
    """Inputs that an alignment metric cannot be computed on; the message says which and why."""


class AlignmentPreconditionError(AlignmentInputError):
    """Valid data on which one metric is undefined (too few rows or dimensions for its settings,
    no variance, a different ``d`` for a one-space metric). A preset (``all``/``paper``/``fast``)
    skips that metric and reports this message as the reason; a metric named explicitly raises it.
    Bad data (NaN/inf, zero-norm rows, mismatched ``n``) is a plain :class:`AlignmentInputError`
    and always raises."""


def _format_rows(rows: torch.Tensor) -> str:
    listed = ", ".join(str(int(i)) for i in rows[:_MAX_LISTED_ROWS])
    more = f", … ({rows.numel()} rows in total)" if rows.numel() > _MAX_LISTED_ROWS else ""
    return f"[{listed}{more}]"


def as_matrix(x: Any, name: str = "x") -> torch.Tensor:
    """Return ``x`` as a 2-D floating CPU tensor ``(n, d)``; errors name ``name``."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise AlignmentInputError(f"{name}: cannot be read as an array ({exc})") from exc
        if arr.dtype == object:
            raise AlignmentInputError(f"{name}: is not a numeric array (dtype=object)")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim != 2:
        raise AlignmentInputError(f"{name}: expected a 2-D (n, d) array, got shape {tuple(t.shape)}")
    if t.is_complex():
        raise AlignmentInputError(f"{name}: complex values are not supported")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    elif t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    if t.shape[1] == 0:
        raise AlignmentInputError(f"{name}: has zero columns (d = 0)")
    return t


def check_finite_rows(x: torch.Tensor, name: str = "x") -> None:
    """Raise :class:`AlignmentInputError` listing the rows of ``x`` holding NaN or ±inf."""
    finite = torch.isfinite(x).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten()
        raise AlignmentInputError(f"{name}: non-finite values (NaN or inf) in rows {_format_rows(bad)}")


def check_paired(
    x: Any,
    y: Any,
    *,
    same_dim: bool = True,
    min_n: int = 2,
    names: tuple[str, str] = ("x", "y"),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two paired ``(n, d)`` arrays and return them as tensors of one floating dtype.

    Checks: both 2-D; the same number of rows (they are paired); at least ``min_n`` rows; the
    same number of columns when ``same_dim`` (metrics that compare the two sets in one space);
    no NaN/inf (the offending row indices are named).
    """
    tx, ty = as_matrix(x, names[0]), as_matrix(y, names[1])
    if tx.shape[0] != ty.shape[0]:
        raise AlignmentInputError(
            f"{names[0]} has {tx.shape[0]} rows but {names[1]} has {ty.shape[0]}: paired inputs need the same n"
        )
    if tx.shape[0] < min_n:
        raise AlignmentPreconditionError(f"need at least {min_n} paired rows, got n = {tx.shape[0]}")
    if same_dim and tx.shape[1] != ty.shape[1]:
        raise AlignmentPreconditionError(
            f"{names[0]} has d = {tx.shape[1]} but {names[1]} has d = {ty.shape[1]}: "
            "this metric compares both sets in one embedding space and needs the same d"
        )
    check_finite_rows(tx, names[0])
    check_finite_rows(ty, names[1])
    dtype = torch.promote_types(tx.dtype, ty.dtype)
    return tx.to(dtype), ty.to(dtype)


def check_nonzero_rows(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Row norms ``(n, 1)`` of ``x``; zero rows are an error naming their indices."""
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    zero = (norms <= 0).flatten()
    if bool(zero.any()):
        raise AlignmentInputError(
            f"{name}: rows {_format_rows(torch.nonzero(zero).flatten())} have zero norm and cannot be L2-normalised"
        )
    return norms


def l2_normalize_rows(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Return ``x`` with unit-norm rows; zero rows are an error naming their indices."""
    return x / check_nonzero_rows(x, name)
