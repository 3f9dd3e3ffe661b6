"""The privacy package's exception and the parameter checks that raise it."""

from __future__ import annotations

import math
import numbers

from bbjax.errors import BbjaxError


class PrivacyError(BbjaxError):
    """A privacy mechanism or accountant was given invalid parameters."""


def check_positive(name: str, value: float) -> float:
    """``value`` as a float, or :class:`PrivacyError` unless it is finite and > 0."""
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
        raise PrivacyError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_nonnegative(name: str, value: float) -> float:
    """``value`` as a float, or :class:`PrivacyError` unless it is finite and >= 0."""
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
        raise PrivacyError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_count(name: str, value: int) -> int:
    """``value``, or :class:`PrivacyError` unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise PrivacyError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_open_unit(name: str, value: float) -> float:
    """``value`` as a float, or :class:`PrivacyError` unless 0 < value < 1."""
    if not (isinstance(value, numbers.Real) and 0.0 < value < 1.0):
        raise PrivacyError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


def check_closed_unit(name: str, value: float) -> float:
    """``value`` as a float, or :class:`PrivacyError` unless 0 <= value <= 1."""
    if not (isinstance(value, numbers.Real) and 0.0 <= value <= 1.0):
        raise PrivacyError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)
