"""Parameter validators shared by every package (one home, the chex style).

Each returns the value converted (``int`` or ``float``) or raises ``error`` (an
:class:`~bbjax.errors.InvalidArgument` subclass, :class:`~bbjax.errors.InvalidArgument` by
default) with a message naming the parameter, the value and what is allowed; extra keyword
arguments go to the error's constructor.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from bbjax.errors import InvalidArgument


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_count(name: str, value: Any, *, error: type[Exception] = InvalidArgument,
                upper: int | None = None, **error_args: Any) -> int:
    """``value`` as an int, unless it is not an integer >= 1 (and <= ``upper`` if given)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise error(f"{name} must be an integer >= 1, got {value!r}", **error_args)
    if upper is not None and value > upper:
        raise error(f"{name} must be at most {upper}, got {value!r}", **error_args)
    return int(value)


def check_positive(name: str, value: Any, *, error: type[Exception] = InvalidArgument,
                   **error_args: Any) -> float:
    """``value`` as a float, unless it is not a finite number > 0."""
    if not (_is_real(value) and math.isfinite(value) and value > 0):
        raise error(f"{name} must be a finite number > 0, got {value!r}", **error_args)
    return float(value)


def check_nonnegative(name: str, value: Any, *, error: type[Exception] = InvalidArgument,
                      **error_args: Any) -> float:
    """``value`` as a float, unless it is not a finite number >= 0."""
    if not (_is_real(value) and math.isfinite(value) and value >= 0):
        raise error(f"{name} must be a finite number >= 0, got {value!r}", **error_args)
    return float(value)


def check_open_unit(name: str, value: Any, *, error: type[Exception] = InvalidArgument,
                    **error_args: Any) -> float:
    """``value`` as a float, unless it is not in the open interval (0, 1)."""
    if not (_is_real(value) and 0.0 < value < 1.0):
        raise error(f"{name} must be in (0, 1), got {value!r}", **error_args)
    return float(value)


def check_closed_unit(name: str, value: Any, *, error: type[Exception] = InvalidArgument,
                      **error_args: Any) -> float:
    """``value`` as a float, unless it is not in the closed interval [0, 1]."""
    if not (_is_real(value) and 0.0 <= value <= 1.0):
        raise error(f"{name} must be in [0, 1], got {value!r}", **error_args)
    return float(value)
