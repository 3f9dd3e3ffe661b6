"""Errors raised while compiling or loading a compiled artifact."""

from bbjax.errors import BbjaxError, UnboundSlotError

__all__ = ["CompileError", "CrossClassDataflowError", "NotCompiledError", "PassportError",
           "UnboundSlotError"]


class CompileError(BbjaxError):
    """The Module cannot be compiled; the message names the op, slot or edge at fault."""


class CrossClassDataflowError(CompileError):
    """An op's data inputs live on different peer classes."""


class NotCompiledError(BbjaxError):
    """A model carries no compilation passport."""


class PassportError(BbjaxError):
    """A passport does not match its model (version, bindings or a partition's bytes)."""
