"""A Backend component: overrides of the lowering's ONNX op table."""

from __future__ import annotations

from collections.abc import Mapping

import jax

from bbjax.components.component import Component, OpKey
from bbjax.components.roles import Role
from bbjax.onnx.ops.registry import OpImpl


def backend(ops: Mapping[OpKey, OpImpl], name: str = "backend") -> Component:
    """A stateless Backend whose ``methods`` are ``ops``: ``(domain, op_type) -> impl``.

    Each ``impl(ctx, *inputs)`` has the op-table signature of
    :mod:`bbjax.onnx.ops.registry` and replaces the lowering's implementation of that op
    (e.g. with a Pallas kernel). ``init(key)`` returns ``()``.
    """
    return Component(Role.BACKEND, _no_state, ops, name)


def _no_state(key: jax.Array) -> tuple[()]:
    return ()
