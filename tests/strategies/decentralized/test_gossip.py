"""Gossip averaging against the dense float64 matrix power, and the population's errors."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import bbjax
from bbjax.errors import TopologyError
from bbjax.strategies.decentralized.gossip import (
    GossipAveraging,
    gossip_value,
    mixing_args,
    mixing_weights,
    population,
)
from bbjax.strategies.decentralized.metrics import consensus_distance
from bbjax.strategies.decentralized.topology import (
    from_neighbours,
    one_peer_exponential,
    ring,
)
from tests.strategies.decentralized.decentralized_reference import (
    compile_round,
    dense,
    directed_graph,
    irregular_graph,
    padded,
)


def template():
    return {"a": np.zeros(3, np.float32), "b": np.zeros((2, 2), np.float32)}


def run_gossip(topology, values, rounds, **options):
    bindings = {"value": gossip_value(template()), "weights": mixing_weights(topology)}
    compiled = compile_round(GossipAveraging(), bindings)
    return bbjax.simulate(compiled, population(topology, {"value": (values,)}, **options),
                          rounds, jax.random.key(0), bindings=bindings)


@pytest.mark.parametrize("make", [lambda rng: irregular_graph(9, rng, chords=5),
                                  lambda rng: one_peer_exponential(8)],
                         ids=["irregular-padded", "time-varying"])
def test_gossip_after_t_rounds_is_the_matrix_power(make):
    rng = np.random.default_rng()
    topology = make(rng)
    n, rounds = topology.count, 6
    values = {"a": rng.normal(size=(n, 3)).astype(np.float32),
              "b": rng.normal(size=(n, 2, 2)).astype(np.float32)}
    history = run_gossip(topology, values, rounds)
    product = np.eye(n)
    for t in range(rounds):
        product = dense(topology, t) @ product
    got = history.states["node"]["value"].value
    for leaf in ("a", "b"):
        want = np.tensordot(product, values[leaf].astype(np.float64), 1)
        np.testing.assert_allclose(got[leaf], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[leaf].mean(0), values[leaf].mean(0), atol=1e-6)
    used = [int((topology.weights[t % topology.period] != 0).sum()) for t in range(rounds)]
    assert list(history["bytes_sent"]) == [edges * (3 + 4) * 4 for edges in used]
    np.testing.assert_allclose(history["neighbours_heard"], np.array(used) / n)


def test_gossip_reaches_the_mean_and_consensus_distance_is_the_spread():
    rng = np.random.default_rng()
    topology = ring(10)
    values = {"a": rng.normal(size=(10, 3)).astype(np.float32),
              "b": rng.normal(size=(10, 2, 2)).astype(np.float32)}
    start = consensus_distance(values)
    flat = np.concatenate([values["a"], values["b"].reshape(10, 4)], 1).astype(np.float64)
    np.testing.assert_allclose(start, ((flat - flat.mean(0)) ** 2).sum() / 10, rtol=1e-5)
    end = run_gossip(topology, values, 120).states["node"]["value"].value
    assert float(consensus_distance(end)) < 1e-6 * float(start)
    np.testing.assert_allclose(end["a"], np.broadcast_to(values["a"].mean(0), (10, 3)),
                               atol=1e-4)


def test_a_lost_message_leaves_its_weight_with_the_receiver():
    rng = np.random.default_rng()
    topology = ring(12)
    values = {"a": rng.normal(size=(12, 3)).astype(np.float32),
              "b": rng.normal(size=(12, 2, 2)).astype(np.float32)}
    history = run_gossip(topology, values, 1, dropout=0.5)
    new = np.asarray(history.states["node"]["value"].value["a"], np.float64)
    old = values["a"].astype(np.float64)
    heard = round(history["neighbours_heard"][0] * 12)
    assert 0 < heard < 24
    # every node's new value is 1/3 of each heard neighbour and the rest its own
    explained = 0
    for i in range(12):
        left, right = old[(i - 1) % 12], old[(i + 1) % 12]
        options = [(a * left + b * right + (3 - a - b) * old[i]) / 3
                   for a in (0, 1) for b in (0, 1)]
        match = [np.allclose(new[i], o, rtol=1e-5, atol=1e-6) for o in options]
        assert any(match)
        explained += [0, 1, 1, 2][match.index(True)]
    assert explained == heard


def test_mixing_args_gives_each_node_its_rows_and_out_neighbours():
    rng = np.random.default_rng()
    topology = directed_graph(11, rng, extra=9)
    weights, self_weights, ins, out, out_weights = mixing_args(topology)
    assert weights.shape == (11, 1, topology.k) and self_weights.shape == (11, 1)
    for j in range(11):
        np.testing.assert_array_equal(weights[j, 0], topology.weights[0, j])
        np.testing.assert_array_equal(ins[j], topology.neighbours[j])
        assert sorted(out[j][out[j] >= 0]) == [i for i in range(11)
                                               if j in topology.neighbours[i]]
        for slot, i in enumerate(out[j]):                   # what receiver i gives j
            want = topology.matrix(0)[i, j] if i >= 0 else 0.0
            assert out_weights[j, 0, slot] == pytest.approx(want, rel=1e-6)


def test_population_errors():
    topology = ring(6)
    values = {"a": np.zeros((5, 3), np.float32), "b": np.zeros((5, 2, 2), np.float32)}
    with pytest.raises(TopologyError, match=r"ring\(6\) has 6 nodes.*\[5, 3\]"):
        population(topology, {"value": (values,)})
    directed = directed_graph(6, np.random.default_rng(0), extra=3)
    with pytest.raises(TopologyError, match="only column-stochastic.*PushSum"):
        population(directed, {})
    with pytest.raises(TopologyError, match="must be a Topology"):
        population(topology.neighbours, {})
    with pytest.raises(TopologyError, match="weights slot"):
        population(topology, {"weights": ()})


def test_a_population_of_another_topology_is_refused_by_the_weights():
    small = ring(6)                                                     # 2 neighbours each
    wider = from_neighbours(padded([[(i + d) % 6 for d in (1, 2, 3, 4, 5)] for i in range(6)]))
    bindings = {"value": gossip_value(template()), "weights": mixing_weights(small)}
    compiled = compile_round(GossipAveraging(), bindings)
    values = {"a": np.zeros((6, 3), np.float32), "b": np.zeros((6, 2, 2), np.float32)}
    with pytest.raises(TopologyError, match="neighbour_weights has shape"):
        bbjax.simulate(compiled, population(wider, {"value": (values,)}), 1,
                       jax.random.key(0), bindings=bindings)
