"""A DataSource over one client's zero-padded rows (a row of :class:`bbjax.data.FederatedData`).

Only the first ``size`` rows are real. An epoch is ``ceil(size / batch_size)`` batches of
``batch_size`` rows; it visits every real row once, in the order
``order[(a_e * j + c_e) mod size]`` for ``j = 0, 1, ...``, where ``order`` is a random
permutation of the real rows drawn at ``init`` and, per epoch ``e``, ``c_e`` is a random
offset and ``a_e`` a random prime below 100 that does not divide ``size`` (so ``j -> a_e j +
c_e`` is a bijection mod ``size``). The last batch of an epoch wraps around to the start of
the same epoch, so every batch holds only real examples and has the same shape whatever
the client's size. A step costs O(batch_size): no reshuffle sorts all rows, which matters
under ``vmap``, where a conditional reshuffle would run at every step. The size lives in
the state, so one component serves clients of every size: ``jax.vmap(init)(keys, xs, ys,
sizes)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from bbjax.components.component import Component, PyTree
from bbjax.errors import ComponentError
from bbjax._checks import check_count
from bbjax.components.roles import Role
from bbjax.components.tree_checks import cast_like, shared_rows, spec_of


@struct.dataclass
class PaddedDataState:
    """The padded rows, the number of real ones, this epoch's order and position."""

    x: PyTree  # leaves (max_size, ...)
    y: PyTree  # leaves (max_size, ...)
    size: jax.Array  # int32, number of real rows (the first ones)
    order: jax.Array  # int32 (max_size,): a permutation of the real rows, then the padding
    position: jax.Array  # int32, index in this epoch of the next batch's first row
    epoch: jax.Array  # int32, epoch of the last batch returned (0 = the first)
    key: jax.Array  # the key the epochs' strides and offsets derive from


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
    batch_size = check_count("batch_size", batch_size, error=ComponentError, component=name, role=role)
    template = spec_of((x, y))
    max_size = shared_rows(template, component=name, role=role)
    size = check_count("size", size, error=ComponentError, component=name, role=role)
    if max_size > _LARGEST:
        raise ComponentError(f"{max_size} rows per client is more than the {_LARGEST} this "
                             f"source indexes in int32", component=name, role=role)
    if size > max_size:
        raise ComponentError(f"size ({size}) exceeds the {max_size} rows given", component=name,
                             role=role)
    default = (x, y, size)

    def shuffle(key: jax.Array, size: jax.Array) -> jax.Array:
        scores = jnp.where(jnp.arange(max_size) < size, jax.random.uniform(key, (max_size,)), 2.0)
        return jnp.argsort(scores).astype(jnp.int32)

    def epoch_map(state: PaddedDataState, epoch: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Stride ``a_e`` (a prime < 100 not dividing the size) and offset ``c_e``, from
        one draw of two random words."""
        bits = jax.random.bits(jax.random.fold_in(state.key, epoch), (2,), jnp.uint32)
        primes = jnp.asarray(_PRIMES)
        start = (bits[0] % primes.shape[0]).astype(jnp.int32)
        rotated = primes[(start + jnp.arange(primes.shape[0])) % primes.shape[0]]
        stride = rotated[jnp.argmax(state.size % rotated != 0)]
        return stride, (bits[1] % state.size.astype(jnp.uint32)).astype(jnp.int32)

    def init(key: jax.Array, x: PyTree = None, y: PyTree = None, size=None) -> PaddedDataState:
        data = (default[0] if x is None else x, default[1] if y is None else y)
        data = cast_like(template, data, "init data", component=name, role=role)
        real = jnp.clip(jnp.asarray(default[2] if size is None else size, jnp.int32), 1, max_size)
        key, sub = jax.random.split(key)
        return PaddedDataState(x=data[0], y=data[1], size=real, order=shuffle(sub, real),
                               position=jnp.int32(0), epoch=jnp.int32(0), key=key)

    def next_batch(state: PaddedDataState) -> tuple[PaddedDataState, tuple[PyTree, PyTree]]:
        starts_epoch = state.position >= state.size
        epoch = state.epoch + starts_epoch.astype(jnp.int32)
        position = jnp.where(starts_epoch, 0, state.position)
        stride, offset = epoch_map(state, epoch)
        j = (position + jnp.arange(batch_size, dtype=jnp.int32)) % state.size
        rows = state.order[(stride * j + offset) % state.size]
        batch = jax.tree.map(lambda a: a[rows], (state.x, state.y))
        return state.replace(position=position + batch_size, epoch=epoch), batch

    def reset(state: PaddedDataState) -> tuple[PaddedDataState, tuple[()]]:
        return state.replace(position=jnp.int32(0), epoch=state.epoch + 1), ()

    def num_examples(state: PaddedDataState) -> tuple[PaddedDataState, jax.Array]:
        return state, state.size

    return Component(Role.DATA_SOURCE, init, {"next_batch": next_batch, "reset": reset,
                                              "num_examples": num_examples}, name,
                     config={"batch_size": batch_size})


_LARGEST = (2**31 - 1) // 100  # a_e * j stays below 2**31
# 25 primes: their product exceeds 2**31, so every int32 size leaves at least one usable.
_PRIMES = np.array([p for p in range(2, 100) if all(p % q for q in range(2, p))], np.int32)
