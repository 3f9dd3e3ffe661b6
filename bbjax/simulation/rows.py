"""A per-peer program run for a cohort without copying the drawn peers' states.

A cohort's peers run the step traced for one peer (a jaxpr), vmapped over the drawn peers.
Its state inputs are not the drawn rows gathered up front (a copy of, say, every drawn
client's padded data each round) but views: the entry's whole stack and the peer's row.
The jaxpr is evaluated equation by equation; a ``gather`` or ``dynamic_slice`` that reads a
view (``x[rows]`` of a client's data) reads the stack at ``(row, rows)`` instead, one gather
straight from the stack, as a hand-written round indexes ``x[i, rows]``. Calls of nested
jaxprs (``jit``) are evaluated the same way, inline; any other use of a view reads the
peer's row of the stack then (once per view).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core

_GATHER = "gather"
_DYNAMIC_SLICE = "dynamic_slice"
_CALLS = ("jit", "pjit", "closed_call", "core_call")


@dataclass
class RowView:
    """Row ``row`` (a scalar int) of ``stack``, not read yet."""

    stack: Any
    row: Any
    _read: Any = field(default=None, repr=False)

    def read(self) -> jax.Array:
        """The row itself (gathered the first time it is needed)."""
        if self._read is None:
            self._read = lax.dynamic_index_in_dim(self.stack, self.row, 0, keepdims=False)
        return self._read


def run(jaxpr: core.ClosedJaxpr, args: Sequence[Any]) -> list:
    """Evaluate ``jaxpr`` on ``args``, some of which are :class:`RowView` s."""
    return _evaluate(jaxpr.jaxpr, jaxpr.consts, list(args))


def _evaluate(jaxpr: core.Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list:
    env: dict = {}

    def read(var: Any) -> Any:
        return var.val if isinstance(var, core.Literal) else env[var]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        values = [read(v) for v in eqn.invars]
        if any(isinstance(v, RowView) for v in values):
            outs = _with_views(eqn, values)
        else:
            outs = _bind(eqn, values)
        env.update(zip(eqn.outvars, outs))
    return [_plain(read(v)) for v in jaxpr.outvars]


def _bind(eqn: Any, values: list) -> list:
    """What ``jax.core.eval_jaxpr`` does for one equation."""
    with eqn.ctx.manager:
        outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
    return list(outs) if eqn.primitive.multiple_results else [outs]


def _with_views(eqn: Any, values: list) -> list:
    name = eqn.primitive.name
    operand, rest = values[0], values[1:]
    if name == _GATHER and isinstance(operand, RowView) and not any(
            isinstance(v, RowView) for v in rest):
        return [_gather(operand, rest[0], eqn.params)]
    if name == _DYNAMIC_SLICE and isinstance(operand, RowView) and not any(
            isinstance(v, RowView) for v in rest):
        return [_dynamic_slice(operand, rest, eqn.params)]
    if name in _CALLS and "jaxpr" in eqn.params:
        inner = eqn.params["jaxpr"]
        return _evaluate(inner.jaxpr, inner.consts, values)
    return _bind(eqn, [_plain(v) for v in values])


def _plain(value: Any) -> Any:
    return value.read() if isinstance(value, RowView) else value


def _gather(view: RowView, indices: jax.Array, params: dict) -> jax.Array:
    """``gather(stack[row], indices)`` as one gather from the stack at ``(row, indices)``."""
    dims = params["dimension_numbers"]
    row = jnp.broadcast_to(jnp.asarray(view.row, indices.dtype), indices.shape[:-1] + (1,))
    shifted = lax.GatherDimensionNumbers(
        offset_dims=dims.offset_dims,
        collapsed_slice_dims=(0, *(d + 1 for d in dims.collapsed_slice_dims)),
        start_index_map=(0, *(d + 1 for d in dims.start_index_map)),
        operand_batching_dims=tuple(d + 1 for d in dims.operand_batching_dims),
        start_indices_batching_dims=dims.start_indices_batching_dims)
    return lax.gather(view.stack, jnp.concatenate([row, indices], axis=-1), shifted,
                      (1, *params["slice_sizes"]), indices_are_sorted=False,
                      unique_indices=params["unique_indices"], mode=params["mode"],
                      fill_value=params["fill_value"])


def _dynamic_slice(view: RowView, starts: Sequence[Any], params: dict) -> jax.Array:
    """``dynamic_slice(stack[row], starts)`` as one slice of the stack."""
    sizes = params["slice_sizes"]
    part = lax.dynamic_slice(view.stack, (view.row, *starts), (1, *sizes))
    return lax.squeeze(part, (0,))
