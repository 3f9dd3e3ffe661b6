"""Reductions, arg-reductions, cumulative scans and the softmax family."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from onnx import TensorProto

from bbjax.onnx.dtypes import jax_dtype
from bbjax.onnx.ops.registry import op


def _axis(ctx, axis: int, ndim: int) -> int:
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ctx.error(f"axis {axis} is out of range for rank {ndim}")
    return axis % max(ndim, 1)


def _reduce_axes(ctx, x, axes_input) -> tuple[int, ...]:
    """The axes to reduce: the ``axes`` input (newer opsets) or attribute (older ones).

    No axes means every axis, or none when ``noop_with_empty_axes`` is set.
    """
    if axes_input is not None:
        axes = ctx.static_ints(axes_input, "axes")
    else:
        axes = ctx.attr("axes", [])
    if not axes:
        return () if ctx.attr("noop_with_empty_axes", 0) else tuple(range(x.ndim))
    return tuple(sorted({_axis(ctx, a, x.ndim) for a in axes}))


def _register_reduce(name: str, fn, empty=None) -> None:
    """Register ``fn(x, axes, keepdims)``; ``empty(dtype)`` fills reductions over no elements."""

    def impl(ctx, x, axes=None):
        x = jnp.asarray(x)
        axes = _reduce_axes(ctx, x, axes)
        keepdims = bool(ctx.attr("keepdims", 1))
        if empty is not None and any(x.shape[a] == 0 for a in axes):
            shape = [1 if a in axes else d for a, d in enumerate(x.shape)
                     if keepdims or a not in axes]
            return jnp.full(shape, empty(x.dtype), dtype=x.dtype)
        return fn(x, axes, keepdims)

    op(name)(impl)


def _lowest(dtype):
    if dtype == np.bool_:
        return False
    return jnp.iinfo(dtype).min if jnp.issubdtype(dtype, jnp.integer) else -jnp.inf


def _highest(dtype):
    if dtype == np.bool_:
        return True
    return jnp.iinfo(dtype).max if jnp.issubdtype(dtype, jnp.integer) else jnp.inf


def _log_sum_exp(x, axes, keepdims):
    """Stabilised by the largest finite element (a zero shift when there is none)."""
    shift = jnp.max(jnp.where(jnp.isinf(x), -jnp.inf, x), axis=axes, keepdims=True)
    shift = lax.stop_gradient(jnp.where(jnp.isfinite(shift), shift, 0))
    total = jnp.sum(jnp.exp(x - shift), axis=axes, keepdims=True)
    out = jnp.log(total) + shift
    return (out if keepdims else jnp.squeeze(out, axes)).astype(x.dtype)


_register_reduce("ReduceSum", lambda x, a, k: jnp.sum(x, a, keepdims=k, dtype=x.dtype))
_register_reduce("ReduceMean", lambda x, a, k: jnp.mean(x, a, keepdims=k, dtype=x.dtype))
_register_reduce("ReduceProd", lambda x, a, k: jnp.prod(x, a, keepdims=k, dtype=x.dtype))
_register_reduce("ReduceMax", lambda x, a, k: jnp.max(x, a, keepdims=k), empty=_lowest)
_register_reduce("ReduceMin", lambda x, a, k: jnp.min(x, a, keepdims=k), empty=_highest)
_register_reduce("ReduceL1", lambda x, a, k: jnp.sum(jnp.abs(x), a, keepdims=k, dtype=x.dtype))
_register_reduce("ReduceL2", lambda x, a, k: jnp.sqrt(
    jnp.sum(x * x, a, keepdims=k, dtype=x.dtype)).astype(x.dtype))
_register_reduce("ReduceSumSquare", lambda x, a, k: jnp.sum(x * x, a, keepdims=k, dtype=x.dtype))
_register_reduce("ReduceLogSum", lambda x, a, k: jnp.log(
    jnp.sum(x, a, keepdims=k, dtype=x.dtype)).astype(x.dtype))
_register_reduce("ReduceLogSumExp", _log_sum_exp, empty=lambda dtype: -jnp.inf)


def _register_arg(name: str, fn) -> None:
    def impl(ctx, x):
        """Ties go to the first index, or the last with ``select_last_index``."""
        x = jnp.asarray(x)
        axis = _axis(ctx, ctx.attr("axis", 0), x.ndim)
        keepdims = bool(ctx.attr("keepdims", 1))
        if ctx.attr("select_last_index", 0):
            index = x.shape[axis] - 1 - fn(jnp.flip(x, axis), axis=axis, keepdims=keepdims)
        else:
            index = fn(x, axis=axis, keepdims=keepdims)
        return index.astype(jax_dtype(TensorProto.INT64))

    op(name)(impl)


_register_arg("ArgMax", jnp.argmax)
_register_arg("ArgMin", jnp.argmin)


def _register_scan(name: str, fn, identity: int) -> None:
    def impl(ctx, x, axis):
        """``exclusive`` shifts in the identity; ``reverse`` scans from the end."""
        x = jnp.asarray(x)
        (axis,) = ctx.static_ints(axis, "axis")
        axis = _axis(ctx, axis, x.ndim)
        reverse, exclusive = ctx.attr("reverse", 0), ctx.attr("exclusive", 0)
        if reverse:
            x = jnp.flip(x, axis)
        if exclusive:
            pad = [(0, 0)] * x.ndim
            pad[axis] = (1, 0)
            x = jnp.pad(x, pad, constant_values=identity)
            x = lax.slice_in_dim(x, 0, x.shape[axis] - 1, axis=axis)
        out = fn(x, axis=axis, dtype=x.dtype)
        return jnp.flip(out, axis) if reverse else out

    op(name)(impl)


_register_scan("CumSum", jnp.cumsum, 0)
_register_scan("CumProd", jnp.cumprod, 1)


def _register_softmax(name: str, fn) -> None:
    def impl(ctx, x):
        """Opset < 13 flattens to 2-D at ``axis`` (default 1); later opsets use one axis (-1)."""
        x = jnp.asarray(x)
        if x.size == 0:
            return x
        if ctx.opset >= 13:
            return fn(x, _axis(ctx, ctx.attr("axis", -1), x.ndim))
        axis = _axis(ctx, ctx.attr("axis", 1), x.ndim)
        rows = math.prod(x.shape[:axis])
        return fn(x.reshape(rows, -1), 1).reshape(x.shape)

    op(name)(impl)


def _hardmax(x, axis):
    return jax.nn.one_hot(jnp.argmax(x, axis=axis), x.shape[axis], dtype=x.dtype, axis=axis)


_register_softmax("Softmax", lambda x, axis: jax.nn.softmax(x, axis=axis))
_register_softmax("LogSoftmax", lambda x, axis: jax.nn.log_softmax(x, axis=axis))
_register_softmax("Hardmax", _hardmax)
