"""The data package's exception and the argument checks that raise it."""

from __future__ import annotations

import math
import numbers

import numpy as np

from bbjax.errors import BbjaxError


class DataError(BbjaxError):
    """Invalid arguments to a partitioner or generator, or a malformed data file.

    The message names the parameter or the array at fault.
    """


def check_count(name: str, value: int) -> int:
    """``value`` as an int, or :class:`DataError` unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise DataError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_positive(name: str, value: float) -> float:
    """``value`` as a float, or :class:`DataError` unless it is finite and > 0."""
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Real) and math.isfinite(value) and value > 0
    ):
        raise DataError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_nonnegative(name: str, value: float) -> float:
    """``value`` as a float, or :class:`DataError` unless it is finite and >= 0."""
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0
    ):
        raise DataError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


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
