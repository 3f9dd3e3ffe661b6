"""Errors raised while recording a Module."""

from bbjax.errors import BbjaxError


class ModuleError(BbjaxError):
    """A Module body is malformed (undeclared input, duplicate output, bad peer set…)."""


class UnboundSlotError(ModuleError):
    """A body calls a slot that no component is bound to."""
