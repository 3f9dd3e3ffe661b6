"""A DataSource over in-memory arrays: shuffled fixed-size batches, epoch after epoch.

An epoch is ``num_examples // batch_size`` batches drawn from a fresh permutation; the
``num_examples % batch_size`` examples left at the end of each epoch's permutation are
dropped (drop-last), so every batch has ``batch_size`` rows and each example appears at
most once per epoch (exactly once when ``batch_size`` divides ``num_examples``). The
next epoch starts, reshuffled, on the first ``next_batch`` after the last batch of the
current one, or at ``reset``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from bbjax.components.component import Component, PyTree
from bbjax.errors import ComponentError
from bbjax._checks import check_count
from bbjax.components.roles import Role
from bbjax.components.tree_checks import cast_like, shared_rows, spec_of


@struct.dataclass
class ArrayDataState:
    """The data, this epoch's permutation and the position in it."""

    x: PyTree  # leaves (num_examples, ...)
    y: PyTree  # leaves (num_examples, ...)
    order: jax.Array  # int32 (num_examples,), this epoch's permutation
    position: jax.Array  # int32, index of the next batch in this epoch
    epoch: jax.Array  # int32, epoch of the last batch returned (0 = the first)
    key: jax.Array  # the key of the next reshuffle


def array_data_source(
    x: PyTree, y: PyTree, batch_size: int, name: str = "array_data_source"
) -> Component:
    """A DataSource over examples ``x`` with labels ``y`` (pytrees of arrays whose leaves
    share the leading ``num_examples`` axis).

    ``init(key, x=None, y=None)`` shuffles with ``key``; the data lives in the state, and
    ``x``/``y`` given to ``init`` replace the factory's data with arrays of the same shapes,
    cast to its dtypes (so ``jax.vmap(init)(keys, xs, ys)`` gives each peer its own shard).
    ``next_batch(state) -> (state, (x_batch, y_batch))``; ``reset(state)`` starts the
    next epoch now; ``num_examples(state)`` is ``num_examples`` (int32). Raises :class:`ComponentError` for an empty dataset, mismatched
    leading axes or ``batch_size`` outside ``[1, num_examples]``.
    """
    role = Role.DATA_SOURCE.value
    batch_size = check_count("batch_size", batch_size, error=ComponentError, component=name, role=role)
    template = spec_of((x, y))
    num_examples = shared_rows(template, component=name, role=role)
    if batch_size > num_examples:
        raise ComponentError(
            f"batch_size ({batch_size}) exceeds the number of examples ({num_examples})",
            component=name,
            role=role,
        )
    num_batches = num_examples // batch_size
    default = (x, y)

    def init(key: jax.Array, x: PyTree = None, y: PyTree = None) -> ArrayDataState:
        data = (default[0] if x is None else x, default[1] if y is None else y)
        data = cast_like(template, data, "init data", component=name, role=role)
        key, sub = jax.random.split(key)
        return ArrayDataState(
            x=data[0],
            y=data[1],
            order=jax.random.permutation(sub, num_examples).astype(jnp.int32),
            position=jnp.int32(0),
            epoch=jnp.int32(0),
            key=key,
        )

    def new_epoch(state: ArrayDataState) -> ArrayDataState:
        key, sub = jax.random.split(state.key)
        return state.replace(
            order=jax.random.permutation(sub, num_examples).astype(jnp.int32),
            position=jnp.int32(0),
            epoch=state.epoch + 1,
            key=key,
        )

    def next_batch(state: ArrayDataState) -> tuple[ArrayDataState, tuple[PyTree, PyTree]]:
        state = jax.lax.cond(state.position >= num_batches, new_epoch, lambda s: s, state)
        rows = jax.lax.dynamic_slice_in_dim(state.order, state.position * batch_size, batch_size)
        batch = jax.tree.map(lambda a: a[rows], (state.x, state.y))
        return state.replace(position=state.position + 1), batch

    def reset(state: ArrayDataState) -> tuple[ArrayDataState, tuple[()]]:
        return new_epoch(state), ()

    def count(state: ArrayDataState) -> tuple[ArrayDataState, jax.Array]:
        return state, jnp.int32(num_examples)

    return Component(Role.DATA_SOURCE, init,
                     {"next_batch": next_batch, "reset": reset, "num_examples": count}, name,
                     config={"batch_size": batch_size})

