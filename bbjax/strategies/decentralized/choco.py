"""CHOCO-SGD and CHOCO-Gossip (Koloskova, Stich & Jaggi 2019, Algorithms 1 and 2): gossip
with compressed messages.

Every node ``i`` keeps public copies ``x̂_j`` of itself and of each in-neighbour ``j``
(zero at the start). Each round it takes its local step ``x_i^{+½} = x_i − η ∇F_i(x_i)``
(CHOCO-SGD; CHOCO-Gossip has none), sends ``q_i = Q(x_i^{+½} − x̂_i)`` through a
``bbjax.compression`` codec to its out-neighbours, adds the decoded ``q_j`` to every copy
``x̂_j`` (its own included), and moves by the consensus step ``γ``:

    x_i ← x_i^{+½} + γ Σ_j w_ij (x̂_j − x̂_i).

A node sends to all its out-neighbours every round, on the edges a time-varying topology
leaves unused that round too: every copy has to follow every ``q``. The wire carries only
the codec's payload (``bytes_sent`` counts it), and the copies are
CHOCO's error feedback: give a codec without its own (``top_k(k, error_feedback=False)``,
``uniform_quantization(b)``, ``stochastic_quantization(b)``…). A lost message leaves the
receiver's copy of its sender behind for good (as on a real network without
retransmission); in that round its weight stays with ``x̂_i``.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from bbjax._checks import check_count
from bbjax.components import Component, Role
from bbjax.compression import Codec
from bbjax.dsl import Graph, Module, PeerSet
from bbjax.errors import InvalidArgument, TopologyError
from bbjax.strategies.decentralized.gossip import PyTree, begin_round, mix


@struct.dataclass
class ChocoState:
    """A node's public copy of itself ``hat``, its copies of its ``k`` in-neighbours
    (``copies``, leaves ``[k, ...]``), its codec's state and the key the codec draws from
    (raw key data, uint32)."""

    hat: PyTree
    copies: PyTree
    codec_state: PyTree
    key: jax.Array


def choco_copies(codec: Codec, template: PyTree, degree: int,
                 name: str = "choco") -> Component:
    """A Protocol component keeping CHOCO's public copies for a node of ``degree``
    in-neighbours, for trees shaped like ``template`` (the model's parameters).

    ``encode(x) -> payload``: the arrays of ``Q(x − x̂_i)`` by ``codec`` (a tuple: exactly
    what travels), added (decoded) to ``x̂_i``. ``receive(payloads, arrived) -> (x̂_i,
    copies)``: adds each arrived neighbour's decoded payload (``payloads`` stacked
    ``[degree, ...]``) to its copy.
    """
    degree = check_count("degree", degree)
    zeros = jax.tree.map(lambda t: jnp.zeros(jnp.shape(t), jnp.result_type(t)), template)
    structure = jax.tree.structure(jax.eval_shape(
        lambda key: codec.encode(codec.init(zeros), zeros, key)[1], jax.random.key(0)))

    def init(key: jax.Array) -> ChocoState:
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)  # the simulation's jnp.where refuses typed keys
        copies = jax.tree.map(lambda z: jnp.zeros((degree, *z.shape), z.dtype), zeros)
        return ChocoState(zeros, copies, codec.init(zeros), key)

    def encode(state: ChocoState, x: PyTree) -> tuple[ChocoState, PyTree]:
        key, sub = jax.random.split(state.key)
        codec_state, payload, _ = codec.encode(
            state.codec_state, jax.tree.map(jnp.subtract, x, state.hat), sub)
        hat = jax.tree.map(jnp.add, state.hat, codec.decode(payload))
        return ChocoState(hat, state.copies, codec_state, key), tuple(jax.tree.leaves(payload))

    def receive(state: ChocoState, payloads: PyTree,
                arrived: jax.Array) -> tuple[ChocoState, tuple[PyTree, PyTree]]:
        decoded = jax.vmap(lambda p: codec.decode(jax.tree.unflatten(structure, p)))(payloads)
        gathered = {leaf.shape[0] for leaf in jax.tree.leaves(decoded)}
        if gathered != {degree}:
            raise TopologyError(f"{name}: a node gathered {sorted(gathered)} neighbours' "
                                f"payloads but keeps copies of {degree}: give choco_copies "
                                "the topology's degree (Topology.k)")
        copies = jax.tree.map(
            lambda c, q: c + jnp.where(arrived.reshape((-1,) + (1,) * (q.ndim - 1)), q, 0),
            state.copies, decoded)
        return state.replace(copies=copies), (state.hat, copies)

    return Component(Role.PROTOCOL, init, {"encode": encode, "receive": receive}, name)


def check_consensus_step(gamma: Any) -> float:
    """``gamma`` as a float in ``(0, 1]``, else :class:`InvalidArgument`."""
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not 0 < gamma <= 1:
        raise InvalidArgument(f"consensus_step must be a number in (0, 1], got {gamma!r}")
    return float(gamma)


def _consensus(g: Graph, x: PyTree, ins: PeerSet, out: PeerSet, gamma: float) -> PyTree:
    """Send ``Q(x − x̂_i)``, update the copies and return ``x + γ Σ_j w_ij (x̂_j − x̂_i)``."""
    payload = g.slot("choco").encode(x)
    payloads, arrived = g.gather("compressed", payload, to=out, senders=ins)
    hat, copies = g.slot("choco").receive(payloads, arrived)
    weights, self_weight = g.slot("weights").next_round(after=arrived)
    mixed = mix(hat, copies, arrived, weights, self_weight)
    g.output("neighbours_heard", jnp.sum(arrived.astype(jnp.int32)))
    return jax.tree.map(lambda a, m, h: a + gamma * (m - h), x, mixed, hat)


class ChocoGossip(Module):
    """One round of CHOCO-Gossip of the ``value`` slot's value with consensus step
    ``consensus_step`` (γ, in (0, 1]).

    Slots: ``value`` (:func:`~bbjax.strategies.decentralized.gossip.gossip_value`),
    ``choco`` (:func:`choco_copies`) and ``weights``. Output: ``neighbours_heard``.
    """

    name = "choco_gossip"

    def __init__(self, consensus_step: float):
        self.consensus_step = check_consensus_step(consensus_step)

    def body(self, g: Graph) -> None:
        tick, ins, out = begin_round(g, every_round=True)
        value = g.slot("value").value(after=tick)
        g.slot("value").set(_consensus(g, value, ins, out, self.consensus_step))


class ChocoSGDRound(Module):
    """One CHOCO-SGD iteration on every node with consensus step ``consensus_step``.

    Slots: ``model`` (a Model with ``train``; its optimizer takes the local step),
    ``data``, ``choco`` (:func:`choco_copies`) and ``weights``. Outputs: ``train_loss``
    and ``neighbours_heard``.
    """

    name = "choco_sgd"

    def __init__(self, consensus_step: float):
        self.consensus_step = check_consensus_step(consensus_step)

    def body(self, g: Graph) -> None:
        tick, ins, out = begin_round(g, every_round=True)
        x, y = g.slot("data").next_batch(after=tick)
        loss = g.slot("model").train(x, y)
        stepped = g.slot("model").params(after=loss)
        g.slot("model").load_parameters(_consensus(g, stepped, ins, out, self.consensus_step))
        g.output("train_loss", loss)
