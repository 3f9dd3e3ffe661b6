"""Exceptions raised by bbjax. Every error a user can hit derives from :class:`BbjaxError`."""

from __future__ import annotations


class BbjaxError(Exception):
    """Base class of every bbjax exception."""


class ExportError(BbjaxError):
    """A JAX function could not be exported to ONNX.

    ``primitive`` names the JAX primitive at fault (when one is) and ``source`` the user
    code it came from.
    """

    def __init__(self, message: str, *, primitive: str | None = None, source: str | None = None):
        self.primitive = primitive
        self.source = source
        parts = [message]
        if primitive:
            parts.append(f"primitive: {primitive}")
        if source:
            parts.append(f"from: {source}")
        super().__init__("; ".join(parts))


class LoweringError(BbjaxError):
    """An ONNX model could not be lowered to JAX (malformed, unsupported or non-jittable).

    ``node`` is the node's name, ``op`` its ``domain::op_type``.
    """

    def __init__(self, message: str, *, node: str | None = None, op: str | None = None):
        self.node = node
        self.op = op
        where = ""
        if node is not None or op is not None:
            where = f"node {node or '<unnamed>'!r} ({op or '?'}): "
        super().__init__(where + message)


class DataDependentError(LoweringError):
    """An op needs, at trace time, a value that depends on traced inputs (a data-dependent
    shape, count or branch). The model runs eagerly on concrete inputs but not under ``jit``."""


class UnboundSlotError(BbjaxError):
    """A Module calls a slot that no component is bound to; the message names the slot."""
