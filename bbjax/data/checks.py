"""Checks of data arrays, raising :class:`~bbjax.errors.DataError`."""

from __future__ import annotations


import numpy as np

from bbjax.errors import DataError


def check_numeric(arr: np.ndarray, name: str) -> None:
    """:class:`DataError` naming ``name`` unless ``arr`` holds numbers or booleans."""
    if arr.dtype.kind not in "biufc":
        raise DataError(f"{name} must hold numbers or booleans, got dtype {arr.dtype}")


def check_examples(x: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` as numpy arrays, or :class:`DataError` unless both are numeric and share
    one non-empty leading example axis."""
    x, y = np.asarray(x), np.asarray(y)
    check_numeric(x, "x")
    check_numeric(y, "y")
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"x must have a non-empty leading example axis, got shape {x.shape}")
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise DataError(f"y must have x's {x.shape[0]} examples on axis 0, got shape {y.shape}")
    return x, y


def check_labels(y: np.ndarray) -> np.ndarray:
    """``y``, or :class:`DataError` unless it is a 1-D array of integer class labels."""
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"y must be 1-D integer class labels, got shape {y.shape} and dtype {y.dtype}"
        )
    return y
