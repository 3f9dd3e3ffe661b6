"""The weighted-mean Aggregator (FedAvg): ``Σ w_i x_i / Σ w_i`` over one round's peers.

Contributions sit in a fixed-capacity buffer keyed by integer peer id. A repeated
contribution from one peer replaces its earlier one. A contribution is rejected, leaving
the buffer unchanged, when its weight is not a finite number > 0
(:attr:`Status.INVALID_WEIGHT`), its peer id is negative (:attr:`Status.INVALID_PEER`) or
the buffer is full and the peer is new (:attr:`Status.FULL`); the state's ``status``
records the outcome of the last call and ``num_rejected`` counts rejections. ``aggregate``
returns ``(mean, total_weight)`` and clears the buffer; on an empty buffer it returns
zeros and a total of 0 and sets :attr:`Status.EMPTY`. Sums run in float32 (or the
leaf's wider float type) in slot order and the mean is cast to each leaf's dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from bbjax.components.component import Component, PyTree
from bbjax._checks import check_count
from bbjax.components.roles import Role
from bbjax.components.status import Status
from bbjax.components.tree_checks import cast_like, spec_of
from bbjax.errors import ComponentError


@struct.dataclass
class WeightedMeanState:
    """The buffer: slot ``i`` holds ``peers[i]`` (-1 when free), its weight and tensor."""

    peers: jax.Array  # int32 (capacity,)
    weights: jax.Array  # float32 (capacity,), 0 in free slots
    tensors: PyTree  # example_params' structure, each leaf (capacity, *leaf.shape)
    status: jax.Array  # int32 Status of the last call
    num_rejected: jax.Array  # int32, contributions rejected since init


def weighted_mean(capacity: int, example_params: PyTree, name: str = "weighted_mean") -> Component:
    """An Aggregator buffering up to ``capacity`` peers' pytrees shaped like ``example_params``.

    ``contribute(state, peer, tensor, weight)``: ``peer`` an int id >= 0, ``tensor`` a
    pytree with ``example_params``' structure and shapes, ``weight`` e.g. a sample count.
    ``aggregate(state) -> (state, (mean, total_weight))``. ``init(key)`` ignores ``key``.
    A tensor of the wrong structure or shapes raises :class:`ComponentError` when traced;
    leaves are cast to ``example_params``' dtypes.
    """
    role = Role.AGGREGATOR.value
    capacity = check_count("capacity", capacity, error=ComponentError, component=name, role=role)
    template = spec_of(example_params)

    def init(key: jax.Array) -> WeightedMeanState:
        return WeightedMeanState(
            peers=jnp.full((capacity,), -1, jnp.int32),
            weights=jnp.zeros((capacity,), jnp.float32),
            tensors=jax.tree.map(lambda t: jnp.zeros((capacity, *t.shape), t.dtype), template),
            status=jnp.int32(Status.OK),
            num_rejected=jnp.int32(0),
        )

    def contribute(
        state: WeightedMeanState, peer: jax.Array, tensor: PyTree, weight: jax.Array
    ) -> tuple[WeightedMeanState, tuple[()]]:
        tensor = cast_like(
            template, tensor, "tensor", component=name, role=role, method="contribute"
        )
        peer = jnp.asarray(peer, jnp.int32)
        weight = jnp.asarray(weight, jnp.float32)
        same = state.peers == peer
        free = state.peers < 0
        known = jnp.any(same)
        slot = jnp.where(known, jnp.argmax(same), jnp.argmax(free))
        status = jnp.select(
            [peer < 0, ~(jnp.isfinite(weight) & (weight > 0)), ~known & ~jnp.any(free)],
            [Status.INVALID_PEER, Status.INVALID_WEIGHT, Status.FULL],
            Status.OK,
        ).astype(jnp.int32)
        ok = status == Status.OK

        def put(buffer: jax.Array, value: jax.Array) -> jax.Array:
            return buffer.at[slot].set(jnp.where(ok, value, buffer[slot]))

        tensors = jax.tree.map(put, state.tensors, tensor)
        new = WeightedMeanState(
            peers=put(state.peers, peer),
            weights=put(state.weights, weight),
            tensors=tensors,
            status=status,
            num_rejected=state.num_rejected + (~ok).astype(jnp.int32),
        )
        return new, ()

    def aggregate(state: WeightedMeanState) -> tuple[WeightedMeanState, tuple[PyTree, jax.Array]]:
        occupied = state.peers >= 0
        weights = jnp.where(occupied, state.weights, 0.0)
        total = jnp.sum(weights)
        empty = ~jnp.any(occupied)

        def mean(buffer: jax.Array) -> jax.Array:
            acc = jnp.promote_types(buffer.dtype, jnp.float32)
            mask = occupied.reshape((capacity,) + (1,) * (buffer.ndim - 1))
            w = weights.astype(acc).reshape(mask.shape)
            weighted = jnp.sum(w * jnp.where(mask, buffer, 0).astype(acc), axis=0)
            return (weighted / jnp.where(empty, 1, total).astype(acc)).astype(buffer.dtype)

        result = jax.tree.map(mean, state.tensors)
        new = state.replace(
            peers=jnp.full_like(state.peers, -1),
            weights=jnp.zeros_like(state.weights),
            status=jnp.where(empty, Status.EMPTY, Status.OK).astype(jnp.int32),
        )
        return new, (result, total)

    return Component(
        Role.AGGREGATOR, init, {"contribute": contribute, "aggregate": aggregate}, name
    )

