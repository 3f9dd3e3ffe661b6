"""A Backend component: overrides of the lowering's ONNX op table."""

from __future__ import annotations

from collections.abc import Mapping

import jax

from bbjax.components.component import Component, OpKey
from bbjax.components.roles import Role
from bbjax.errors import ComponentError
from bbjax.onnx.ops.registry import OpImpl


def backend(ops: Mapping[OpKey, OpImpl], name: str = "backend") -> Component:
    """A stateless Backend whose ``methods`` are ``ops``: ``(domain, op_type) -> impl``.

    Each ``impl(ctx, *inputs)`` has the op-table signature of
    :mod:`bbjax.onnx.ops.registry` and replaces the lowering's implementation of that op
    (e.g. with a Pallas kernel). ``init(key)`` returns ``()``. Bound in a compile
    (``Compiler().bind("backend", backend(...))``) or given in the bindings of
    ``simulate``/``install``, it makes them lower every partition with these ops
    (:func:`op_overrides`).
    """
    return Component(Role.BACKEND, _no_state, ops, name)


def op_overrides(components: Mapping[str, Component]) -> dict[OpKey, OpImpl]:
    """The op overrides of every Backend among ``components`` (slot -> component), for
    ``bbjax.onnx.lower(model, ops=...)``; :class:`ComponentError` when two Backends
    override the same op."""
    ops: dict[OpKey, OpImpl] = {}
    owner: dict[OpKey, str] = {}
    for slot, component in sorted(components.items()):
        if component.role is not Role.BACKEND:
            continue
        for key, impl in component.methods.items():
            if key in ops:
                raise ComponentError(
                    f"overridden by the Backends of slots {owner[key]!r} and {slot!r}",
                    component=component.name, role=Role.BACKEND.value,
                    method=f"{key[0] or 'ai.onnx'}::{key[1]}")
            ops[key], owner[key] = impl, slot
    return ops


def _no_state(key: jax.Array) -> tuple[()]:
    return ()
