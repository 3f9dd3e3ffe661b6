"""Gossip averaging over a topology, and the per-node mixing weights every decentralized
round of this package shares.

Each round node ``i`` sends its value to its out-neighbours and replaces it by
``w_ii x_i + Σ_j w_ij x_j`` over its in-neighbours ``j`` (row ``round % T`` of the
topology's weights). With doubly stochastic weights on a connected graph every node tends
to the mean of the initial values; after ``t`` rounds the values are ``W^t x_0``.

A node's own rows of a :class:`~bbjax.strategies.decentralized.topology.Topology` live in
its state (:func:`mixing_weights`, slot ``weights``), so one compiled round serves any
topology of the same shape; :func:`population` builds the population: the ``node`` peers
with their neighbours and weights, and one ``self`` peer that only starts each round with
an empty (0-byte) message. Each node gathers from its in-neighbours inside its own step
(O(N·k)). A node counts the rounds it ran, so time-varying weights stay in step as long as
every node runs every round: give no cohort.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from bbjax.components import Component, Role
from bbjax.dsl import Graph, Module, PeerSet
from bbjax.errors import TopologyError
from bbjax.simulation import Peers
from bbjax.strategies.decentralized.topology import Topology

PyTree = Any
NODE = "node"
"""The peer class of a decentralized round's nodes."""


@struct.dataclass
class MixingState:
    """Node ``i``'s rows of a topology: its in-neighbours' weights ``[T, k]``, its own
    weight ``[T]``, its in- and out-neighbours (``-1`` padding), the weight each
    out-neighbour gives it ``[T, k_out]`` and the rounds it has run."""

    neighbour_weights: jax.Array
    self_weights: jax.Array
    in_neighbours: jax.Array
    out_neighbours: jax.Array
    out_weights: jax.Array
    step: jax.Array


def mixing_args(topology: Topology) -> tuple[np.ndarray, ...]:
    """Each node's rows of ``topology``, stacked over the nodes: the arguments of
    :func:`mixing_weights`' ``init`` (``[N, T, k]`` weights, ``[N, T]`` self weights,
    ``[N, k]`` in-neighbours, ``[N, k_out]`` out-neighbours, ``k_out`` the largest
    out-degree, and ``[N, T, k_out]`` the weight each out-neighbour gives the node)."""
    neighbours, n = topology.neighbours, topology.count
    receiver, column = np.nonzero(neighbours >= 0)
    sender = neighbours[receiver, column]
    order = np.argsort(sender, kind="stable")
    receiver, column, sender = receiver[order], column[order], sender[order]
    degree = np.bincount(sender, minlength=n)
    first = np.concatenate([[0], np.cumsum(degree)[:-1]])
    width = max(1, int(degree.max(initial=0)))
    slot = np.arange(sender.size) - first[sender]
    out = np.full((n, width), -1, np.int32)
    out[sender, slot] = receiver
    out_weights = np.zeros((n, topology.period, width), np.float32)
    out_weights[sender, :, slot] = topology.weights[:, receiver, column].T
    return (np.ascontiguousarray(topology.weights.transpose(1, 0, 2)),
            np.ascontiguousarray(topology.self_weights.T), neighbours, out, out_weights)


def mixing_weights(topology: Topology, name: str = "weights") -> Component:
    """A Protocol component holding one node's rows of ``topology`` (:class:`MixingState`).

    ``init(key, neighbour_weights=None, self_weights=None, in_neighbours=None,
    out_neighbours=None, out_weights=None)`` takes a node's rows (:func:`mixing_args`;
    default: node 0's). ``peers() -> (in_neighbours, out_neighbours, active)`` (int32
    ``[k]``, ``[k_out]`` and ``[k_out]``: the out-neighbours that give the node a nonzero
    weight in round ``step % T``, ``-1`` for the others); ``next_round() -> (weights,
    self_weight)``: row ``step % T`` (``[k]`` and a scalar), and the round is counted. Raises :class:`TopologyError` when ``topology`` is no
    ``Topology`` or ``init`` is given rows of another shape.
    """
    if not isinstance(topology, Topology):
        raise TopologyError(f"topology must be a Topology, got {type(topology).__name__}")
    default = tuple(a[0] for a in mixing_args(topology))
    period = default[0].shape[0]

    def init(key: jax.Array, neighbour_weights: Any = None, self_weights: Any = None,
             in_neighbours: Any = None, out_neighbours: Any = None,
             out_weights: Any = None) -> MixingState:
        del key
        given = (neighbour_weights, self_weights, in_neighbours, out_neighbours, out_weights)
        rows = [jnp.asarray(d if a is None else a, d.dtype) for a, d in zip(given, default)]
        for row, d, what in zip(rows, default, ("neighbour_weights", "self_weights",
                                                  "in_neighbours", "out_neighbours",
                                                  "out_weights")):
            if row.shape != d.shape:
                raise TopologyError(f"mixing_weights: {what} has shape {row.shape}, the "
                                    f"topology's rows {d.shape}")
        return MixingState(*rows, step=jnp.int32(0))

    def peers(state: MixingState) -> tuple[MixingState, tuple[jax.Array, ...]]:
        used = state.out_weights[state.step % period] != 0
        return state, (state.in_neighbours, state.out_neighbours,
                       jnp.where(used, state.out_neighbours, -1))

    def next_round(state: MixingState) -> tuple[MixingState, tuple[jax.Array, jax.Array]]:
        t = state.step % period
        return state.replace(step=state.step + 1), (state.neighbour_weights[t],
                                                    state.self_weights[t])

    return Component(Role.PROTOCOL, init, {"peers": peers, "next_round": next_round}, name)


def population(topology: Topology, init_args: Mapping[str, tuple] | None = None, *,
               push_sum: bool = False, weights_slot: str = "weights",
               dropout: float = 0.0) -> dict[str, Any]:
    """The population of a decentralized round over ``topology``: ``{"self": 1, "node":
    Peers(N, ...)}``.

    ``init_args`` are the nodes' other slots' (``[N, ...]`` leaves); the ``weights_slot``
    gets each node's rows (:func:`mixing_args`). The nodes see their topology's
    in-neighbours and lose each message with probability ``dropout``. The weights must be
    doubly stochastic, or only column-stochastic with ``push_sum=True`` (the push-sum
    rounds). Raises :class:`TopologyError` when ``topology`` is no ``Topology``, a leaf of
    ``init_args`` has not ``N`` rows or the weights do not suit the round.
    """
    if not isinstance(topology, Topology):
        raise TopologyError(f"topology must be a Topology, got {type(topology).__name__}")
    if not push_sum and not topology.doubly_stochastic:
        raise TopologyError(f"{topology.name}'s weights are only column-stochastic: gossip "
                            "would not keep the mean; use a push-sum round (PushSumAveraging, "
                            "PushSumSGD) with population(..., push_sum=True)")
    n = topology.count
    init_args = dict(init_args or {})
    for slot, args in init_args.items():
        for leaf in jax.tree.leaves(args):
            if np.ndim(leaf) == 0 or np.shape(leaf)[0] != n:
                raise TopologyError(
                    f"{topology.name} has {n} nodes, but a leaf of init_args[{slot!r}] has "
                    f"shape {list(np.shape(leaf))} (need [{n}, ...])")
    if weights_slot in init_args:
        raise TopologyError(f"init_args names the weights slot {weights_slot!r}")
    init_args[weights_slot] = mixing_args(topology)
    return {"self": 1, NODE: Peers(n, init_args=init_args, dropout=dropout,
                                   neighbours=topology.neighbours)}


def mix(own: PyTree, stacked: PyTree, arrived: jax.Array, weights: jax.Array,
        self_weight: jax.Array) -> PyTree:
    """``self_weight · own + Σ_k weights_k · stacked_k`` over the neighbours that arrived;
    the weight of one that did not stays with ``own``, so each row keeps its sum.

    ``stacked`` leaves are ``[k, *own.shape]``; the sum runs in float32 and is cast back.
    Raises :class:`TopologyError` when ``k`` is not the weights' length.
    """
    k = weights.shape[-1]
    for leaf in jax.tree.leaves(stacked):
        if leaf.shape[0] != k:
            raise TopologyError(
                f"a node gathered {leaf.shape[0]} neighbours but holds {k} mixing weights: "
                "build the population with population(topology) so that both come from one "
                "topology")
    heard = jnp.where(arrived, weights, 0.0).astype(jnp.float32)
    keep = (self_weight + jnp.sum(weights - heard)).astype(jnp.float32)
    return jax.tree.map(
        lambda x, xs: (keep * x.astype(jnp.float32)
                       + jnp.tensordot(heard, xs.astype(jnp.float32), 1)).astype(x.dtype),
        own, stacked)


def begin_round(g: Graph, every_round: bool = False) -> tuple[Any, PeerSet, PeerSet]:
    """The ``self`` peer starts the round on every node with an empty message (0 bytes);
    returns it as received, and the node's in-neighbours and the out-neighbours to send
    to (``weights`` slot): those whose weight for it is nonzero this round, or all of them
    with ``every_round`` (a time-varying topology then sends on unused edges too)."""
    tick = g.send("round", jnp.zeros((0,), jnp.uint8), to=g.peers(NODE))
    ins, out, active = g.slot("weights").peers(after=tick)
    return tick, PeerSet(ins, NODE), PeerSet(out if every_round else active, NODE)


@struct.dataclass
class ValueState:
    """The value a node averages."""

    value: PyTree


def gossip_value(template: PyTree, name: str = "value") -> Component:
    """A Protocol component holding a pytree shaped like ``template``: ``init(key,
    value=None)`` (default ``template``), ``value() -> value``, ``set(value) -> ()``."""
    template = jax.tree.map(jnp.asarray, template)

    def init(key: jax.Array, value: PyTree = None) -> ValueState:
        del key
        value = template if value is None else value
        return ValueState(jax.tree.map(lambda t, v: jnp.asarray(v, t.dtype), template, value))

    def get(state: ValueState) -> tuple[ValueState, PyTree]:
        return state, state.value

    def put(state: ValueState, value: PyTree) -> tuple[ValueState, tuple[()]]:
        return ValueState(value), ()

    return Component(Role.PROTOCOL, init, {"value": get, "set": put}, name)


class GossipAveraging(Module):
    """One round of gossip averaging: every node sends its ``value`` slot's value to its
    out-neighbours and keeps ``w_ii x_i + Σ_j w_ij x_j`` (:func:`mix`).

    Slots: ``value`` (:func:`gossip_value`) and ``weights`` (:func:`mixing_weights`).
    Output: ``neighbours_heard``, the mean number of in-neighbours whose value arrived.
    """

    name = "gossip_averaging"

    def body(self, g: Graph) -> None:
        tick, ins, out = begin_round(g)
        value = g.slot("value").value(after=tick)
        stacked, arrived = g.gather("value", value, to=out, senders=ins)
        weights, self_weight = g.slot("weights").next_round(after=arrived)
        g.slot("value").set(mix(value, stacked, arrived, weights, self_weight))
        g.output("neighbours_heard", jnp.sum(arrived.astype(jnp.int32)))
