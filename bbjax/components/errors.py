"""The components package's exception and the parameter check that raises it."""

from __future__ import annotations

import numbers

from bbjax.errors import BbjaxError


class ComponentError(BbjaxError):
    """A component was built or called against its role's contract.

    ``component`` is the component's name, ``role`` its role's value and ``method`` the
    method at fault (each when known); the message starts with them.
    """

    def __init__(
        self,
        message: str,
        *,
        component: str | None = None,
        role: str | None = None,
        method: str | None = None,
    ):
        self.component = component
        self.role = role
        self.method = method
        where = []
        if component is not None:
            where.append(f"component {component!r}" + (f" ({role})" if role else ""))
        elif role is not None:
            where.append(f"role {role}")
        if method is not None:
            where.append(f"method {method!r}")
        super().__init__(", ".join(where) + ": " + message if where else message)


def check_count(param: str, value: int, *, component: str, role: str) -> int:
    """``value`` as an int, or :class:`ComponentError` unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ComponentError(
            f"{param} must be an integer >= 1, got {value!r}", component=component, role=role
        )
    return int(value)
