"""Components made from the algorithm library: rules, codecs and client selectors as slots.

- :func:`rule_aggregator`: any ``bbjax.aggregators`` rule as an Aggregator. Contributions
  fill the same buffer as :func:`weighted_mean` (a repeat replaces, bad weights are
  rejected); ``aggregate`` applies the rule to the buffered peers (the mask marks the
  filled slots), keeps the result as the new global parameters and clears the buffer.
  ``aggregate_stacked(global, tensors, weights, mask, extra)`` applies the rule to a
  whole stacked cohort (what ``g.gather`` delivers) against ``global``, passing ``extra``
  as the rule's per-client input where it takes one (``losses`` for ``qfedavg``,
  ``control_deltas`` for ``scaffold``); the rule's state (momenta, control variates)
  carries over between rounds in the component's state and ``rule_state`` reads it.
  Both return the total weight of the clients that took part; the state's ``rejected``
  holds how many clients the rule rejected in the last aggregation.
- :func:`codec_component`: a ``bbjax.compression`` codec as a Codec; randomized codecs
  draw from a key kept in the state.
- :func:`selector_component`: a ``bbjax.selection`` selector as a PeerSelector; ``sample``
  returns the round's cohort (``-1`` in padding slots) and advances the round.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from bbjax.components.component import Component, PyTree
from bbjax.components.roles import Role
from bbjax.components.weighted_mean import WeightedMeanState, apply_to_buffer, weighted_mean


@struct.dataclass
class RuleAggregatorState:
    buffer: WeightedMeanState
    rule_state: PyTree
    global_params: PyTree
    rejected: jax.Array  # int32, clients the rule rejected in the last aggregation


def rule_aggregator(rule: Any, capacity: int, initial_params: PyTree,
                    name: str = "rule_aggregator") -> Component:
    """An Aggregator applying ``rule`` (e.g. ``bbjax.aggregators.median()``) to up to
    ``capacity`` peers' contributions; ``aggregate`` returns ``(new_global, total_weight)``."""
    buffer = weighted_mean(capacity, initial_params, name=name)

    def init(key: jax.Array) -> RuleAggregatorState:
        params = jax.tree.map(jnp.asarray, initial_params)
        return RuleAggregatorState(buffer.init(key), rule.init(params), params, jnp.int32(0))

    def contribute(state, peer, tensor, weight):
        new_buffer, outputs = buffer.methods["contribute"](state.buffer, peer, tensor, weight)
        return state.replace(buffer=new_buffer), outputs

    def aggregate(state):
        cleared, out, total = apply_to_buffer(rule, state.rule_state, state.global_params,
                                              state.buffer)
        return (RuleAggregatorState(cleared, out.state, out.params, out.rejected),
                (out.params, total))

    extra_name = next((n for n in ("losses", "control_deltas") if n in rule.inputs), None)

    def aggregate_stacked(state, global_params, tensors, weights, mask, extra):
        extra = {extra_name: extra} if extra_name else {}
        out = rule.apply(state.rule_state, global_params, tensors, weights, mask, **extra)
        total = jnp.sum(jnp.where(out.present, jnp.asarray(weights, jnp.float32), 0.0))
        return (RuleAggregatorState(state.buffer, out.state, out.params, out.rejected),
                (out.params, total))

    def rule_state(state):
        return state, state.rule_state

    return Component(Role.AGGREGATOR, init, {"contribute": contribute, "aggregate": aggregate,
                                             "aggregate_stacked": aggregate_stacked,
                                             "rule_state": rule_state}, name)


@struct.dataclass
class CodecState:
    codec_state: PyTree
    key: jax.Array


def codec_component(codec: Any, template: PyTree, name: str = "codec") -> Component:
    """A Codec encoding pytrees shaped like ``template`` with ``codec``."""

    def init(key: jax.Array) -> CodecState:
        return CodecState(codec.init(template), key)

    def encode(state, x):
        key, sub = jax.random.split(state.key)
        codec_state, payload, _ = codec.encode(state.codec_state, x, sub)
        return CodecState(codec_state, key), payload

    def decode(state, payload):
        return state, codec.decode(payload)

    return Component(Role.CODEC, init, {"encode": encode, "decode": decode}, name)


@struct.dataclass
class SelectorState:
    key: jax.Array
    round: jax.Array


def selector_component(selector: Any, name: str = "selector") -> Component:
    """A PeerSelector drawing one cohort of ``selector.cohort_size`` per ``sample`` call."""

    def init(key: jax.Array) -> SelectorState:
        return SelectorState(key, jnp.int32(0))

    def sample(state):
        key, sub = jax.random.split(state.key)
        cohort = selector.select(sub, state.round)
        peers = jnp.where(cohort.valid, cohort.indices, -1).astype(jnp.int32)
        return SelectorState(key, state.round + 1), peers

    def current_view(state):
        return state, jnp.arange(selector.num_clients, dtype=jnp.int32)

    return Component(Role.PEER_SELECTOR, init, {"sample": sample, "current_view": current_view},
                     name)
