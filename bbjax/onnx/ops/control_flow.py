"""If, Loop and Scan: ONNX subgraph ops as ``lax.cond``, ``lax.scan`` and ``lax.while_loop``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bbjax.errors import DataDependentError
from bbjax.onnx.context import is_static
from bbjax.onnx.dtypes import jax_dtype
from bbjax.onnx.ops.registry import op


def _dynamic(values: list[Any]) -> list[Any]:
    return [jax.tree.map(jnp.asarray, v) for v in values]


def _is_traced(values: list[Any]) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(values))


@op("If", foldable=False)
def if_(ctx, cond):
    then_branch, else_branch = ctx.subgraph("then_branch"), ctx.subgraph("else_branch")
    if not _is_traced([cond]):
        taken = then_branch if bool(np.asarray(cond).reshape(())) else else_branch
        return tuple(taken([]))
    pred = jnp.asarray(cond).reshape(()).astype(bool)
    try:
        outs = lax.cond(pred, lambda: _dynamic(then_branch([])), lambda: _dynamic(else_branch([])))
    except (TypeError, ValueError) as exc:
        raise ctx.error("with a traced condition both branches must produce the same types "
                        f"and shapes: {exc}", DataDependentError) from exc
    return tuple(outs)


class _NotAScan(Exception):
    """The loop may stop early, so it cannot be a fixed-length ``lax.scan``."""


@op("Loop", foldable=False)
def loop(ctx, max_trip_count, cond, *initial):
    body = ctx.subgraph("body")
    graph = ctx.attr("body")
    n_carried = len(initial)
    n_scan = len(graph.output) - 1 - n_carried
    iter_dtype = jax_dtype(graph.input[0].type.tensor_type.elem_type or 7)
    trip = None if max_trip_count is None or _is_traced([max_trip_count]) else int(
        np.asarray(max_trip_count).reshape(()))
    traced = _is_traced([max_trip_count, cond, list(initial)])
    if traced:
        if trip is not None and (cond is None or not _is_traced([cond])) and (
                cond is None or bool(np.asarray(cond).reshape(()))):
            try:
                return _loop_as_scan(body, trip, initial, n_carried, iter_dtype)
            except _NotAScan:
                pass
        if n_scan:
            raise ctx.error("a Loop that may stop early cannot have scan outputs under jit "
                            "(their length would depend on data)", DataDependentError)
        if trip is not None:  # a static bound past the counter's range means "no bound"
            max_trip_count = None if trip >= np.iinfo(iter_dtype).max else np.asarray(trip)
        return _loop_as_while(body, max_trip_count, cond, initial, iter_dtype)
    return _loop_unrolled(ctx, body, graph, trip, cond, initial, n_carried, n_scan, iter_dtype)


def _loop_as_scan(body, trip: int, initial, n_carried: int, iter_dtype):
    def step(carry, i):
        outs = body([i.astype(iter_dtype), np.bool_(True), *carry])
        keep_going = outs[0]
        if not (is_static(keep_going) and bool(np.asarray(keep_going).reshape(()))):
            raise _NotAScan
        return _dynamic(outs[1:1 + n_carried]), _dynamic(outs[1 + n_carried:])

    carry, stacked = lax.scan(step, _dynamic(list(initial)), jnp.arange(trip, dtype=iter_dtype))
    return tuple(carry) + tuple(stacked)


def _loop_as_while(body, max_trip_count, cond, initial, iter_dtype):
    limit = None if max_trip_count is None else jnp.asarray(max_trip_count, iter_dtype).reshape(())
    start_cond = jnp.asarray(True if cond is None else cond).reshape(()).astype(bool)

    def keep_going(state):
        i, c, _ = state
        return c if limit is None else c & (i < limit)

    def step(state):
        i, c, carry = state
        outs = body([i, c, *carry])
        return i + 1, jnp.asarray(outs[0]).reshape(()).astype(bool), _dynamic(outs[1:])

    _, _, carry = lax.while_loop(keep_going, step,
                                 (jnp.zeros((), iter_dtype), start_cond, _dynamic(list(initial))))
    return tuple(carry)


def _loop_unrolled(ctx, body, graph, trip, cond, initial, n_carried: int, n_scan: int, iter_dtype):
    """Concrete inputs: run the body iteration by iteration (allows data-dependent lengths)."""
    keep_going = True if cond is None else bool(np.asarray(cond).reshape(()))
    carry = list(initial)
    scans: list[list[Any]] = [[] for _ in range(n_scan)]
    i = 0
    while keep_going and (trip is None or i < trip):
        outs = body([np.asarray(i, iter_dtype), np.bool_(keep_going), *carry])
        keep_going = bool(ctx.static(outs[0], "Loop condition"))
        carry = list(outs[1:1 + n_carried])
        for k in range(n_scan):
            scans[k].append(outs[1 + n_carried + k])
        i += 1
    stacked = []
    for k, values in enumerate(scans):
        if values:
            stacked.append(jnp.stack([jnp.asarray(v) for v in values]))
        else:
            elem = graph.output[1 + n_carried + k].type.tensor_type.elem_type
            stacked.append(jnp.zeros((0,), jax_dtype(elem)))
    return tuple(carry) + tuple(stacked)


@op("Scan", foldable=False)
def scan(ctx, *inputs):
    if ctx.opset < 9:
        return _scan_v8(ctx, *inputs)
    n_scan_in = ctx.attr("num_scan_inputs")
    n_scan_out = len(ctx.attr("body").output) - (len(inputs) - n_scan_in)
    return _scan(ctx, list(inputs), n_scan_in,
                 ctx.attr("scan_input_axes", [0] * n_scan_in),
                 ctx.attr("scan_input_directions", [0] * n_scan_in),
                 ctx.attr("scan_output_axes", [0] * n_scan_out),
                 ctx.attr("scan_output_directions", [0] * n_scan_out))


def _scan(ctx, inputs: list[Any], n_scan_in: int, in_axes, in_dirs, out_axes, out_dirs):
    body = ctx.subgraph("body")
    n_state = len(inputs) - n_scan_in
    state = _dynamic(inputs[:n_state])
    xs = []
    for x, axis, direction in zip(inputs[n_state:], in_axes, in_dirs):
        x = jnp.moveaxis(jnp.asarray(x), axis, 0)
        xs.append(jnp.flip(x, 0) if direction else x)

    def step(carry, elems):
        outs = body([*carry, *elems])
        return _dynamic(outs[:n_state]), _dynamic(outs[n_state:])

    state, ys = lax.scan(step, state, xs)
    outputs = []
    for y, axis, direction in zip(ys, out_axes, out_dirs):
        y = jnp.flip(y, 0) if direction else y
        outputs.append(jnp.moveaxis(y, 0, axis % y.ndim))
    return tuple(state) + tuple(outputs)


def _scan_v8(ctx, sequence_lens, *inputs):
    """Scan-8: a leading batch axis, scan along axis 1, optional per-batch lengths."""
    n_scan_in = ctx.attr("num_scan_inputs")
    if sequence_lens is not None:
        lens = ctx.static(sequence_lens, "Scan sequence_lens")
        if np.any(lens != np.shape(inputs[-n_scan_in])[1]):
            raise ctx.error("Scan-8 with sequence_lens shorter than the sequence is not supported")
    directions = ctx.attr("directions", [0] * n_scan_in)
    n_scan_out = len(ctx.attr("body").output) - (len(inputs) - n_scan_in)
    zeros_in, zeros_out = [0] * n_scan_in, [0] * n_scan_out
    outs = jax.vmap(lambda *xs: _scan(ctx, list(xs), n_scan_in, zeros_in, directions,
                                      zeros_out, zeros_out))(*[jnp.asarray(x) for x in inputs])
    return tuple(outs)
