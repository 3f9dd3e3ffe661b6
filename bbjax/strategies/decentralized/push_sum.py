"""Push-sum over directed graphs: averaging (Kempe, Dobra & Gehrke 2003) and stochastic
gradient push (Nedić & Olshevsky 2016; Assran et al. 2019, SGP).

Each node keeps a mass pair ``(x_i, w_i)``, mixed with column-stochastic weights ``P``
(``P_ij``: the share of ``j``'s mass that goes to ``i``; every column sums to 1, so the
total mass is conserved): ``x_i ← Σ_j P_ij x_j``, ``w_i ← Σ_j P_ij w_j``, starting at
``w_i = 1``. Its estimate ``z_i = x_i / w_i`` tends to the mean of the initial values on a
strongly connected graph, where plain gossip with such weights would not. A node stores
its estimate ``z_i`` (in its ``value`` or ``model`` slot) and its weight ``w_i``
(:func:`push_sum_mass`); ``x_i`` is ``w_i z_i``. Weights ``P_ij`` are applied by the
receiver, from its rows of the topology (the same numbers the sender would split by).

SGP's iteration: ``x_i ← x_i − γ ∇F_i(z_i)`` (the step the ``model`` slot takes at the
estimate), then the push-sum mixing of ``(x_i, w_i)`` and ``z_i = x_i / w_i``.

Build the population with ``population(topology, ..., push_sum=True)``. When a message is
lost, its share stays with the receiver for both ``x`` and ``w``, so the estimate remains a
ratio of one combination (but the total mass is no longer exact).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from bbjax.components import Component, Role
from bbjax.dsl import Graph, Module, PeerSet
from bbjax.strategies.decentralized.gossip import PyTree, begin_round, mix


@struct.dataclass
class PushSumState:
    """A node's push-sum weight ``w_i`` (float32, 1 at the start)."""

    weight: jax.Array


def push_sum_mass(name: str = "push_sum") -> Component:
    """A Protocol component holding the weight ``w_i`` of a node's push-sum mass (its
    numerator is ``w_i`` times the estimate the node keeps elsewhere): ``weight() -> w``,
    ``set(w) -> ()``."""

    def init(key: jax.Array) -> PushSumState:
        del key
        return PushSumState(jnp.float32(1.0))

    def weight(state: PushSumState) -> tuple[PushSumState, jax.Array]:
        return state, state.weight

    def put(state: PushSumState, weight: jax.Array) -> tuple[PushSumState, tuple[()]]:
        return PushSumState(jnp.asarray(weight, jnp.float32)), ()

    return Component(Role.PROTOCOL, init, {"weight": weight, "set": put}, name)


def _push(g: Graph, x: PyTree, weight: jax.Array, ins: PeerSet,
          out: PeerSet) -> tuple[PyTree, jax.Array]:
    """Send the mass ``(x, weight)`` to ``out``, mix what arrived from ``ins`` with this
    round's weights and return the new pair."""
    (xs, ws), arrived = g.gather("mass", (x, weight), to=out, senders=ins)
    weights, self_weight = g.slot("weights").next_round(after=arrived)
    new_x = mix(x, xs, arrived, weights, self_weight)
    new_weight = mix(weight, ws, arrived, weights, self_weight)
    g.output("neighbours_heard", jnp.sum(arrived.astype(jnp.int32)))
    return new_x, new_weight


def _ratio(x: PyTree, weight: jax.Array) -> PyTree:
    """The estimate ``x / weight`` of every leaf, in its dtype."""
    return jax.tree.map(lambda a: (a / weight).astype(a.dtype), x)


class PushSumAveraging(Module):
    """One round of push-sum averaging of the ``value`` slot's estimate.

    Slots: ``value`` (:func:`~bbjax.strategies.decentralized.gossip.gossip_value`, holding
    ``z_i``), ``push_sum`` (:func:`push_sum_mass`) and ``weights``. Output:
    ``neighbours_heard``.
    """

    name = "push_sum_averaging"

    def body(self, g: Graph) -> None:
        tick, ins, out = begin_round(g)
        z = g.slot("value").value(after=tick)
        w = g.slot("push_sum").weight(after=tick)
        x, w = _push(g, jax.tree.map(lambda a: a * w, z), w, ins, out)
        g.slot("push_sum").set(w)
        g.slot("value").set(_ratio(x, w))


class PushSumSGD(Module):
    """One stochastic gradient push iteration on every node.

    Slots: ``model`` (a Model with ``train``, holding ``z_i``), ``data``, ``push_sum``
    (:func:`push_sum_mass`) and ``weights``. Outputs: ``train_loss`` (the nodes' mean
    loss at their estimate) and ``neighbours_heard``.
    """

    name = "push_sum_sgd"

    def body(self, g: Graph) -> None:
        tick, ins, out = begin_round(g)
        z = g.slot("model").params(after=tick)
        w = g.slot("push_sum").weight(after=tick)
        batch_x, batch_y = g.slot("data").next_batch(after=tick)
        loss = g.slot("model").train(batch_x, batch_y)
        stepped = g.slot("model").params(after=loss)
        x = jax.tree.map(lambda a, s: w * a + (s - a), z, stepped)
        x, w = _push(g, x, w, ins, out)
        g.slot("push_sum").set(w)
        g.slot("model").load_parameters(_ratio(x, w))
        g.output("train_loss", loss)
