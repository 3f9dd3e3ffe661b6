"""A DataSource over one client's zero-padded rows (a row of :class:`bbjax.data.FederatedData`).

Only the first ``size`` rows are real. An epoch visits them in a fresh random order,
``ceil(size / batch_size)`` batches of ``batch_size`` rows; the last batch of an epoch
wraps around to the start of the same order, so every batch holds only real examples and
has the same shape whatever the client's size. The size lives in the state, so one
component serves clients of every size: ``jax.vmap(init)(keys, xs, ys, sizes)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from bbjax.components.component import Component, PyTree
from bbjax.components.errors import ComponentError, check_count
from bbjax.components.roles import Role
from bbjax.components.tree_checks import cast_like, spec_of


@struct.dataclass
class PaddedDataState:
    """The padded rows, the number of real ones, this epoch's order and position."""

    x: PyTree  # leaves (max_size, ...)
    y: PyTree  # leaves (max_size, ...)
    size: jax.Array  # int32, number of real rows (the first ones)
    order: jax.Array  # int32 (max_size,): a permutation of the real rows, then the padding
    position: jax.Array  # int32, index in ``order`` of the next batch's first row
    epoch: jax.Array  # int32, epoch of the last batch returned (0 = the first)
    key: jax.Array  # the key of the next reshuffle


def padded_data_source(x: PyTree, y: PyTree, size: int, batch_size: int,
                       name: str = "padded_data_source") -> Component:
    """A DataSource over padded rows ``x``, ``y`` (leaves ``[max_size, ...]``) of which the
    first ``size`` are real.

    ``init(key, x=None, y=None, size=None)`` replaces the factory's data with arrays of the
    same shapes (cast to its dtypes) and its own size. ``next_batch`` returns
    ``batch_size`` real rows; ``reset`` starts the next epoch; ``num_examples`` is the size.
    Raises :class:`ComponentError` when the leaves do not share a leading axis,
    ``size`` is not in ``[1, max_size]`` or ``batch_size`` is not positive.
    """
    role = Role.DATA_SOURCE.value
    batch_size = check_count("batch_size", batch_size, component=name, role=role)
    template = spec_of((x, y))
    sizes = {t.shape[0] if t.shape else 0 for t in jax.tree.leaves(template)}
    if len(sizes) != 1 or 0 in sizes:
        raise ComponentError(f"x and y leaves need one shared, non-empty leading axis; got "
                             f"sizes {sorted(sizes)}", component=name, role=role)
    (max_size,) = sizes
    size = check_count("size", size, component=name, role=role)
    if size > max_size:
        raise ComponentError(f"size ({size}) exceeds the {max_size} rows given", component=name,
                             role=role)
    default = (x, y, size)

    def shuffle(key: jax.Array, size: jax.Array) -> jax.Array:
        scores = jnp.where(jnp.arange(max_size) < size, jax.random.uniform(key, (max_size,)), 2.0)
        return jnp.argsort(scores).astype(jnp.int32)

    def init(key: jax.Array, x: PyTree = None, y: PyTree = None, size=None) -> PaddedDataState:
        data = (default[0] if x is None else x, default[1] if y is None else y)
        data = cast_like(template, data, "init data", component=name, role=role)
        real = jnp.clip(jnp.asarray(default[2] if size is None else size, jnp.int32), 1, max_size)
        key, sub = jax.random.split(key)
        return PaddedDataState(x=data[0], y=data[1], size=real, order=shuffle(sub, real),
                               position=jnp.int32(0), epoch=jnp.int32(0), key=key)

    def new_epoch(state: PaddedDataState) -> PaddedDataState:
        key, sub = jax.random.split(state.key)
        return state.replace(order=shuffle(sub, state.size), position=jnp.int32(0),
                             epoch=state.epoch + 1, key=key)

    def next_batch(state: PaddedDataState) -> tuple[PaddedDataState, tuple[PyTree, PyTree]]:
        state = jax.lax.cond(state.position >= state.size, new_epoch, lambda s: s, state)
        rows = state.order[(state.position + jnp.arange(batch_size)) % state.size]
        batch = jax.tree.map(lambda a: a[rows], (state.x, state.y))
        return state.replace(position=state.position + batch_size), batch

    def reset(state: PaddedDataState) -> tuple[PaddedDataState, tuple[()]]:
        return new_epoch(state), ()

    def num_examples(state: PaddedDataState) -> tuple[PaddedDataState, jax.Array]:
        return state, state.size

    return Component(Role.DATA_SOURCE, init, {"next_batch": next_batch, "reset": reset,
                                              "num_examples": num_examples}, name)
