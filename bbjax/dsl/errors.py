"""Errors raised while recording a Module."""

from bbjax.errors import BbjaxError, UnboundSlotError

__all__ = ["ModuleError", "UnboundSlotError"]


class ModuleError(BbjaxError):
    """A Module body is malformed (undeclared input, duplicate output, bad peer set…)."""
