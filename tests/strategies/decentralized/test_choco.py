"""CHOCO-SGD and CHOCO-Gossip against float64 numpy references with the same compressor."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import bbjax
from bbjax import compression
from bbjax.errors import InvalidArgument, TopologyError
from bbjax.strategies.decentralized.choco import (
    ChocoGossip,
    ChocoSGDRound,
    check_consensus_step,
    choco_copies,
)
from bbjax.strategies.decentralized.gossip import (
    GossipAveraging,
    gossip_value,
    mixing_weights,
    population,
)
from bbjax.strategies.decentralized.metrics import consensus_distance
from bbjax.strategies.decentralized.topology import one_peer_exponential, ring
from tests.strategies.decentralized.decentralized_reference import (
    compile_round,
    dense,
    initial_params,
    irregular_graph,
    logistic_setup,
    node_params,
    softmax_gradient,
)


def top_k(v: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` largest-magnitude entries, the rest zero."""
    keep = np.argsort(-np.abs(v), axis=1)[:, :k]
    q = np.zeros_like(v)
    np.put_along_axis(q, keep, np.take_along_axis(v, keep, 1), 1)
    return q


@pytest.mark.parametrize("make", [lambda rng: irregular_graph(8, rng, chords=3),
                                  lambda rng: one_peer_exponential(8)],
                         ids=["irregular-padded", "time-varying"])
def test_choco_sgd_equals_the_numpy_reference_with_top_k(make):
    rng = np.random.default_rng()
    rounds, lr, gamma, k = 4, 0.5, 0.6, 5
    topology = make(rng)
    model, source, data_args, x, y, order = logistic_setup(8, rounds, rng, learning_rate=lr)
    template = model.init(jax.random.key(0)).params
    codec = compression.top_k(k, error_feedback=False)
    bindings = {"model": model, "data": source, "weights": mixing_weights(topology),
                "choco": choco_copies(codec, template, topology.k)}
    history = bbjax.simulate(compile_round(ChocoSGDRound(gamma), bindings),
                             population(topology, data_args), rounds, jax.random.key(4),
                             bindings=bindings)

    kernel, bias = initial_params(model)       # the flat order: bias (3), kernel (5 x 3)
    flat = np.stack([np.concatenate([bias, kernel.ravel()])] * 8)
    hat = np.zeros_like(flat)
    for t in range(rounds):
        grads = [softmax_gradient(flat[i, 3:].reshape(5, 3), flat[i, :3], x[i, order[i, t]],
                                  y[i, order[i, t]]) for i in range(8)]
        half = flat - lr * np.stack([np.concatenate([g[1], g[0].ravel()]) for g in grads])
        hat = hat + top_k(half - hat, k)
        flat = half + gamma * (dense(topology, t) @ hat - hat)
    got_kernel, got_bias = node_params(history.states)
    np.testing.assert_allclose(got_bias, flat[:, :3], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_kernel.reshape(8, -1), flat[:, 3:], rtol=1e-4, atol=1e-5)
    choco = history.states["node"]["choco"]
    np.testing.assert_allclose(choco.hat["out"]["bias"], hat[:, :3], rtol=1e-4, atol=1e-5)
    for i in range(8):                                      # each copy is its sender's x̂
        for slot, j in enumerate(topology.neighbours[i]):
            if j >= 0:
                np.testing.assert_allclose(choco.copies["out"]["kernel"][i, slot],
                                           choco.hat["out"]["kernel"][j], atol=1e-7)
    edges = int((topology.neighbours >= 0).sum())
    assert list(history["bytes_sent"]) == [edges * k * (4 + 1)] * rounds  # float32 + uint8


def gossip_run(module, bindings, topology, values, rounds):
    return bbjax.simulate(
        compile_round(module, bindings), population(topology, {"value": (values,)}), rounds,
        jax.random.key(5), bindings=bindings,
        evaluate=lambda states: {"consensus": consensus_distance(states["node"]["value"].value)},
        eval_every=1)


@pytest.mark.parametrize("codec", [compression.top_k(2, error_feedback=False),
                                   compression.stochastic_quantization(2)],
                         ids=["top2", "stochastic-2-bit"])
def test_choco_gossip_reaches_consensus_on_fewer_bytes_than_plain_gossip(codec):
    rng = np.random.default_rng()
    topology, rounds, dim = ring(8), 60, 8
    values = rng.normal(size=(8, dim)).astype(np.float32)
    template = np.zeros(dim, np.float32)
    bindings = {"value": gossip_value(template), "weights": mixing_weights(topology),
                "choco": choco_copies(codec, template, topology.k)}
    choco = gossip_run(ChocoGossip(0.3), bindings, topology, values, rounds)
    plain = gossip_run(GossipAveraging(), {"value": gossip_value(template),
                                           "weights": mixing_weights(topology)},
                       topology, values, rounds)
    start = float(consensus_distance(values))
    distance = np.asarray(choco["consensus"])
    assert distance[-1] < 0.05 * start
    assert np.all(np.diff(distance[::10]) < 0)              # falls decade by decade
    final = np.asarray(choco.states["node"]["value"].value)
    np.testing.assert_allclose(final.mean(0), values.mean(0), atol=1e-5)  # W symmetric
    assert choco["bytes_sent"][0] < 0.5 * plain["bytes_sent"][0]
    assert plain["bytes_sent"][0] == 8 * 2 * dim * 4


def test_consensus_step_and_degree_errors():
    for bad in (0, -0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(InvalidArgument, match="consensus_step"):
            ChocoSGDRound(bad)
    assert check_consensus_step(1) == 1.0
    topology = irregular_graph(6, np.random.default_rng(0), chords=2)
    template = np.zeros(4, np.float32)
    bindings = {"value": gossip_value(template), "weights": mixing_weights(topology),
                "choco": choco_copies(compression.top_k(1, error_feedback=False), template,
                                      topology.k + 1)}
    with pytest.raises(TopologyError, match="keeps copies of"):
        compile_round(ChocoGossip(0.5), bindings)


@pytest.mark.slow
def test_choco_sgd_on_4_bit_messages_learns_as_well_as_dpsgd_on_a_seventh_of_the_bytes():
    import optax
    from flax import nnx

    from bbjax.models import LogisticRegression, cross_entropy
    from bbjax.strategies.decentralized.dpsgd import DPSGDRound
    from bbjax.strategies.decentralized.metrics import evaluator
    from bbjax.strategies.decentralized.topology import exponential

    data = bbjax.data.synthetic(0.5, 0.5, num_clients=100, seed=0, max_size=200)
    train, test = bbjax.data.train_test_split(jax.random.key(0), data, test_fraction=0.2)
    model = bbjax.components.flax_model(LogisticRegression(60, 10, rngs=nnx.Rngs(0)),
                                        optax.sgd(0.2), cross_entropy)
    source = bbjax.components.padded_data_source(train.x[0], train.y[0],
                                                 int(train.sizes[0]), batch_size=10)
    evaluate = evaluator(model, test.x.reshape(-1, 60), test.y.reshape(-1),
                         test.mask.reshape(-1))
    graph = exponential(100)
    template = model.init(jax.random.key(0)).params
    runs = {}
    for name, module, extra in [
            ("dpsgd", DPSGDRound(), {}),
            ("choco", ChocoSGDRound(0.8), {"choco": choco_copies(
                compression.stochastic_quantization(4), template, graph.k)})]:
        bindings = {"model": model, "data": source, "weights": mixing_weights(graph), **extra}
        runs[name] = bbjax.simulate(
            compile_round(module, bindings),
            population(graph, {"data": (train.x, train.y, train.sizes)}), 200,
            jax.random.key(1), bindings=bindings, evaluate=evaluate, eval_every=100)
    dpsgd, choco = runs["dpsgd"], runs["choco"]
    assert dpsgd["accuracy"][-1] > 0.6
    assert choco["accuracy"][-1] > dpsgd["accuracy"][-1] - 0.03
    assert choco["bytes_sent"][0] < dpsgd["bytes_sent"][0] / 7
