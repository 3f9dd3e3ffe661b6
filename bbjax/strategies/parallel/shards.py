"""A dataset split into replica shards, and each replica's batches of its shard.

:func:`split` cuts the rows of a dataset into ``R`` contiguous shards and a global batch of
``B`` rows into ``R`` replica batches, both as ``numpy.array_split`` does (the first
``N mod R`` shards get one row more, the first ``B mod R`` replicas one batch row more), and
pads every shard to the largest. :func:`data_shard` is a replica's source: iteration ``t``
reads rows ``(t · b + j) mod n``, ``j < b``, of its shard of ``n`` rows with batch ``b``,
in order, padded to the widest batch. The union over replicas of iteration ``t``'s batches
is therefore one global batch of ``B`` rows, and each replica reports how many of its
rows are real so that the gradients can be weighted by them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from bbjax._checks import check_count
from bbjax.components import Component, Role
from bbjax.components.tree_checks import cast_like, shared_rows, spec_of
from bbjax.errors import ComponentError, DataError, InvalidArgument

PyTree = Any
_INT32 = 2**31 - 1


@struct.dataclass
class ShardState:
    """A replica's padded shard, its number of real rows, its batch and its iteration."""

    x: jax.Array  # [max_rows, ...]
    y: jax.Array  # [max_rows, ...]
    size: jax.Array  # int32: real rows (the first ones)
    batch: jax.Array  # int32: rows of each of its batches
    step: jax.Array  # int32: the iteration next_batch reads next


def split(x: Any, y: Any, replicas: int, batch_size: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(xs, ys, sizes, batches)``: ``x`` and ``y`` (``[N, ...]``) cut into ``replicas``
    contiguous shards zero-padded to ``[replicas, ceil(N / replicas), ...]``, the shards'
    row counts and each replica's share of a global batch of ``batch_size`` rows (int32
    ``[replicas]`` each). Raises :class:`InvalidArgument` for a count that is not an integer
    >= 1 or a batch smaller than ``replicas``, :class:`DataError` when ``x`` and ``y`` do
    not have the same number of rows or there are fewer rows than replicas."""
    replicas = check_count("replicas", replicas)
    batch_size = check_count("batch_size", batch_size)
    if batch_size < replicas:
        raise InvalidArgument(f"batch_size ({batch_size}) must be at least replicas "
                              f"({replicas}): every replica needs a row of each batch")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise DataError(f"x and y need one leading row axis of the same length, got shapes "
                        f"{list(x.shape)} and {list(y.shape)}")
    rows = x.shape[0]
    if rows < replicas:
        raise DataError(f"{rows} rows cannot make {replicas} non-empty shards")
    sizes = np.array([len(a) for a in np.array_split(np.arange(rows), replicas)], np.int32)
    batches = np.array([len(a) for a in np.array_split(np.arange(batch_size), replicas)],
                       np.int32)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    width = int(sizes.max())
    xs = np.zeros((replicas, width, *x.shape[1:]), x.dtype)
    ys = np.zeros((replicas, width, *y.shape[1:]), y.dtype)
    for i, (start, size) in enumerate(zip(starts, sizes)):
        xs[i, :size], ys[i, :size] = x[start:start + size], y[start:start + size]
    return xs, ys, sizes, batches


def data_shard(x: Any, y: Any, batch_size: int, name: str = "data_shard", *,
               size: int | None = None, batch: int | None = None) -> Component:
    """A Protocol component over one replica's padded shard ``x``, ``y`` (``[max_rows,
    ...]``), whose batches are ``batch_size`` rows wide (the widest replica batch).

    ``init(key, x=None, y=None, size=None, batch=None)``: a replica's shard (cast to the
    template's dtypes), its real rows and its batch (defaults: the factory's ``size``, or
    all rows, and ``batch``, or ``batch_size``), clipped to ``[1, max_rows]`` and ``[0,
    batch_size]``. The defaults serve an installed Node, whose ``init`` gets no arguments;
    they are not part of the fingerprint, so every replica's component fits one compiled
    artifact. Methods:
    ``batch(iteration) -> (x, y, count)``: iteration ``t``'s rows ``(t · batch + j) mod
    size`` for ``j < batch``, then padding (row 0), and ``count = batch``;
    ``next_batch() -> (x, y, count)``: the batch of its own iteration counter, which it
    advances. Raises :class:`ComponentError` when the leaves do not share a leading axis,
    ``batch_size`` is not an integer >= 1, or ``max_rows · batch_size`` overflows int32.
    """
    role = Role.PROTOCOL.value
    batch_size = check_count("batch_size", batch_size, error=ComponentError, component=name,
                             role=role)
    template = spec_of((x, y))
    max_rows = shared_rows(template, component=name, role=role)
    if max_rows * batch_size > _INT32:
        raise ComponentError(f"{max_rows} rows by batches of {batch_size} overflow the int32 "
                             "row arithmetic", component=name, role=role)
    default = (x, y, max_rows if size is None else size, batch_size if batch is None else batch)

    def init(key: jax.Array, x: Any = None, y: Any = None, size: Any = None,
             batch: Any = None) -> ShardState:
        del key
        data = (default[0] if x is None else x, default[1] if y is None else y)
        data = cast_like(template, data, "init data", component=name, role=role)
        size = jnp.clip(jnp.asarray(default[2] if size is None else size, jnp.int32), 1,
                        max_rows)
        batch = jnp.clip(jnp.asarray(default[3] if batch is None else batch, jnp.int32), 0,
                         batch_size)
        return ShardState(data[0], data[1], size, batch, jnp.int32(0))

    def rows_of(state: ShardState, iteration: Any) -> tuple[jax.Array, jax.Array]:
        t = jnp.asarray(iteration, jnp.int32) % state.size
        j = jnp.arange(batch_size, dtype=jnp.int32)
        rows = (t * state.batch + j) % state.size
        return jnp.where(j < state.batch, rows, 0), state.batch

    def batch(state: ShardState, iteration: Any
              ) -> tuple[ShardState, tuple[jax.Array, jax.Array, jax.Array]]:
        rows, count = rows_of(state, iteration)
        return state, (state.x[rows], state.y[rows], count)

    def next_batch(state: ShardState) -> tuple[ShardState, tuple[jax.Array, jax.Array,
                                                                 jax.Array]]:
        _, out = batch(state, state.step)
        return state.replace(step=state.step + 1), out

    return Component(Role.PROTOCOL, init, {"batch": batch, "next_batch": next_batch}, name,
                     config={"batch_size": batch_size})


def shard_source(x: Any, y: Any, replicas: int, batch_size: int,
                 name: str = "data_shard") -> Component:
    """The :func:`data_shard` template that suits :func:`split`'s shards of ``x``, ``y``:
    their padded shape and the widest replica batch. Raises what :func:`split` raises."""
    xs, ys, _, batches = split(x, y, replicas, batch_size)
    return data_shard(xs[0], ys[0], int(batches.max()), name)
