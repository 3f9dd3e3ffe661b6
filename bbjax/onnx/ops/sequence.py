"""Sequence ops (sequences are Python lists of arrays) and optionals (empty is ``None``)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from bbjax.onnx.context import is_static
from bbjax.onnx.ops.registry import op
from bbjax.onnx.ops.tensor import split_along, split_sizes


def _position(ctx, position, length: int, high: int, default: int) -> int:
    """A static position in ``[-length, high]``, made non-negative."""
    if position is None:
        return default
    values = ctx.static_ints(position, f"{ctx.op_type}'s position input")
    if len(values) != 1:
        raise ctx.error(f"position must be a single integer, got {values}")
    pos = values[0]
    if not -length <= pos <= high:
        raise ctx.error(f"position {pos} is out of range for a sequence of length {length}")
    return pos + length if pos < 0 else pos


def _sequence(ctx, value) -> list:
    if not isinstance(value, list):
        raise ctx.error(f"expected a sequence, got {type(value).__name__}")
    return value


@op("SequenceConstruct")
def sequence_construct(ctx, *tensors):
    return list(tensors)


@op("SequenceEmpty")
def sequence_empty(ctx):
    return []


@op("SequenceLength")
def sequence_length(ctx, seq):
    return np.array(len(_sequence(ctx, seq)), dtype=np.int64)


@op("SequenceAt")
def sequence_at(ctx, seq, position):
    """A traced position works when all elements share shape and dtype (out of range clamps)."""
    seq = _sequence(ctx, seq)
    if not is_static(position) and seq and len({(np.shape(t), jnp.result_type(t))
                                                for t in seq}) == 1:
        pos = jnp.reshape(position, ())
        pos = jnp.where(pos < 0, pos + len(seq), pos)
        return lax.dynamic_index_in_dim(jnp.stack(seq), pos, keepdims=False)
    return seq[_position(ctx, position, len(seq), len(seq) - 1, 0)]


@op("SequenceInsert")
def sequence_insert(ctx, seq, tensor, position=None):
    """Insert before ``position`` (in ``[-n, n]``; default: append)."""
    seq = list(_sequence(ctx, seq))
    seq.insert(_position(ctx, position, len(seq), len(seq), len(seq)), tensor)
    return seq


@op("SequenceErase")
def sequence_erase(ctx, seq, position=None):
    """Remove the element at ``position`` (default: the last)."""
    seq = list(_sequence(ctx, seq))
    if not seq:
        raise ctx.error("cannot erase from an empty sequence")
    del seq[_position(ctx, position, len(seq), len(seq) - 1, len(seq) - 1)]
    return seq


@op("SplitToSequence")
def split_to_sequence(ctx, data, split=None):
    """``split`` absent: pieces of 1 (axis dropped unless ``keepdims``); a scalar: pieces of
    that size, the last one smaller; a vector: those sizes."""
    axis = ctx.attr("axis", 0)
    rank = np.ndim(data)
    if not -rank <= axis < rank:
        raise ctx.error(f"axis {axis} is out of range for an input of rank {rank}")
    axis = axis + rank if axis < 0 else axis
    dim = np.shape(data)[axis]
    if split is None:
        pieces = split_along(data, [1] * dim, axis)
        return pieces if ctx.attr("keepdims", 1) else [jnp.squeeze(p, axis) for p in pieces]
    sizes = ctx.static(split, "SplitToSequence's split input")
    if sizes.ndim == 0:
        chunk = int(sizes)
        if chunk <= 0:
            raise ctx.error(f"split must be positive, got {chunk}")
        sizes = [chunk] * (dim // chunk) + ([dim % chunk] if dim % chunk else [])
    else:
        sizes = [int(s) for s in sizes]
    return split_along(data, split_sizes(ctx, dim, sizes, len(sizes)), axis)


@op("ConcatFromSequence")
def concat_from_sequence(ctx, seq):
    """Concatenate along ``axis``, or with ``new_axis=1`` stack along a new ``axis``."""
    seq = _sequence(ctx, seq)
    if not seq:
        raise ctx.error("cannot concatenate an empty sequence")
    axis = ctx.attr("axis")
    rank = np.ndim(seq[0]) + (1 if ctx.attr("new_axis", 0) else 0)
    if not -rank <= axis < rank:
        raise ctx.error(f"axis {axis} is out of range for an output of rank {rank}")
    if ctx.attr("new_axis", 0):
        return jnp.stack(seq, axis=axis)
    return jnp.concatenate(seq, axis=axis)


@op("Optional")
def optional(ctx, value=None):
    """An optional holding ``value``, or the empty optional (``None``) without an input."""
    return value


@op("OptionalHasElement")
def optional_has_element(ctx, value=None):
    return np.array(value is not None)


@op("OptionalGetElement")
def optional_get_element(ctx, value):
    if value is None:
        raise ctx.error("the optional input is empty")
    return value
