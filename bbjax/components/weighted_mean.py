"""The weighted-mean Aggregator (FedAvg): ``Σ w_i x_i / Σ w_i`` over one round's peers.

Contributions sit in a fixed-capacity buffer keyed by integer peer id. A repeated
contribution from one peer replaces its earlier one. A contribution is rejected, leaving
the buffer unchanged, when its weight is not a finite number > 0 or exceeds ``max_weight``
(:attr:`Status.INVALID_WEIGHT`), its peer id is negative (:attr:`Status.INVALID_PEER`) or
the buffer is full and the peer is new (:attr:`Status.FULL`). ``aggregate`` applies
:func:`bbjax.aggregators.fedavg` to the buffer, which also rejects a contribution holding a
NaN or an infinity; it returns ``(mean, total_weight)`` over the contributions that took
part and clears the buffer. When none took part it returns zeros and a total of 0 and sets
:attr:`Status.EMPTY`. The state's ``status`` records the outcome of the last call and
``num_rejected`` counts the contributions rejected since ``init``, by either call.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from bbjax import aggregators
from bbjax._checks import check_count, check_positive
from bbjax.components.component import Component, PyTree
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


def apply_to_buffer(rule: aggregators.Aggregator, rule_state: Any, global_params: PyTree,
                    buffer: WeightedMeanState
                    ) -> tuple[WeightedMeanState, aggregators.Aggregation, jax.Array]:
    """Apply ``rule`` to the buffered contributions against ``global_params``.

    Returns the emptied buffer (status :attr:`Status.EMPTY` when no contribution took
    part, the rule's rejections added to ``num_rejected``), the rule's
    :class:`~bbjax.aggregators.Aggregation` and the total weight of those that took part.
    """
    out = rule.apply(rule_state, global_params, buffer.tensors, buffer.weights,
                     buffer.peers >= 0)
    total = jnp.sum(jnp.where(out.present, buffer.weights, 0.0))
    cleared = buffer.replace(
        peers=jnp.full_like(buffer.peers, -1),
        weights=jnp.zeros_like(buffer.weights),
        status=jnp.where(jnp.any(out.present), Status.OK, Status.EMPTY).astype(jnp.int32),
        num_rejected=buffer.num_rejected + out.rejected,
    )
    return cleared, out, total


def weighted_mean(capacity: int, example_params: PyTree, name: str = "weighted_mean",
                  max_weight: float | None = None) -> Component:
    """An Aggregator buffering up to ``capacity`` peers' pytrees shaped like
    ``example_params`` (floating-point leaves).

    ``contribute(state, peer, tensor, weight)``: ``peer`` an int id >= 0, ``tensor`` a
    pytree with ``example_params``' structure and shapes, ``weight`` e.g. a sample count
    (at most ``max_weight``; None: no cap). ``aggregate(state) -> (state, (mean,
    total_weight))``. ``init(key)`` ignores ``key``. A tensor of the wrong structure or
    shapes raises :class:`ComponentError` when traced; leaves are cast to
    ``example_params``' dtypes.
    """
    role = Role.AGGREGATOR.value
    capacity = check_count("capacity", capacity, error=ComponentError, component=name, role=role)
    if max_weight is not None:
        max_weight = check_positive("max_weight", max_weight, error=ComponentError,
                                    component=name, role=role)
    template = spec_of(example_params)
    mean = aggregators.fedavg()

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
        valid = jnp.isfinite(weight) & (weight > 0)
        if max_weight is not None:
            valid = valid & (weight <= max_weight)
        same = state.peers == peer
        free = state.peers < 0
        known = jnp.any(same)
        slot = jnp.where(known, jnp.argmax(same), jnp.argmax(free))
        status = jnp.select(
            [peer < 0, ~valid, ~known & ~jnp.any(free)],
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
        zeros = jax.tree.map(lambda t: jnp.zeros(t.shape, t.dtype), template)
        cleared, out, total = apply_to_buffer(mean, aggregators.EmptyState(), zeros, state)
        return cleared, (out.params, total)

    return Component(
        Role.AGGREGATOR, init, {"contribute": contribute, "aggregate": aggregate}, name,
        config={"capacity": capacity, "max_weight": max_weight},
    )
