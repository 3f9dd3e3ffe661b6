"""Push-sum averaging and SGP on directed graphs against float64 numpy references."""

from __future__ import annotations

import jax
import numpy as np

import bbjax
from bbjax.strategies.decentralized.gossip import (
    gossip_value,
    mixing_weights,
    population,
)
from bbjax.strategies.decentralized.push_sum import (
    PushSumAveraging,
    PushSumSGD,
    push_sum_mass,
)
from tests.strategies.decentralized.decentralized_reference import (
    compile_round,
    dense,
    directed_graph,
    initial_params,
    logistic_setup,
    node_params,
    softmax_gradient,
)


def averaging(topology, values, rounds):
    bindings = {"value": gossip_value(np.zeros(4, np.float32)), "push_sum": push_sum_mass(),
                "weights": mixing_weights(topology)}
    compiled = compile_round(PushSumAveraging(), bindings)
    return bbjax.simulate(compiled, population(topology, {"value": (values,)}, push_sum=True),
                          rounds, jax.random.key(0), bindings=bindings)


def test_push_sum_equals_the_mass_recursion_and_reaches_the_true_mean():
    rng = np.random.default_rng()
    topology = directed_graph(9, rng, extra=7)
    values = (3 + rng.normal(size=(9, 4))).astype(np.float32)
    p = dense(topology, 0)
    assert np.allclose(p.sum(0), 1) and not np.allclose(p.sum(1), 1)  # only columns sum to 1
    for rounds in (4, 150):
        history = averaging(topology, values, rounds)
        mass = np.linalg.matrix_power(p, rounds)
        x, w = mass @ values.astype(np.float64), mass @ np.ones(9)
        np.testing.assert_allclose(history.states["node"]["push_sum"].weight, w, rtol=1e-5)
        np.testing.assert_allclose(history.states["node"]["value"].value, x / w[:, None],
                                   rtol=1e-4, atol=1e-5)
    assert np.ptp(w) > 0.1                                    # the weights matter here
    np.testing.assert_allclose(history.states["node"]["value"].value,
                               np.broadcast_to(values.mean(0), (9, 4)), atol=1e-4)
    plain = np.linalg.matrix_power(p, 150) @ values.astype(np.float64)
    assert np.abs(plain - values.mean(0)).max() > 1e-2        # where plain gossip is biased


def test_stochastic_gradient_push_equals_the_numpy_reference():
    rng = np.random.default_rng()
    rounds, lr = 3, 0.5
    topology = directed_graph(6, rng, extra=5)
    model, source, data_args, x, y, order = logistic_setup(6, rounds, rng, learning_rate=lr)
    bindings = {"model": model, "data": source, "push_sum": push_sum_mass(),
                "weights": mixing_weights(topology)}
    history = bbjax.simulate(compile_round(PushSumSGD(), bindings),
                             population(topology, data_args, push_sum=True), rounds,
                             jax.random.key(3), bindings=bindings)

    kernel, bias = initial_params(model)
    xk, xb, w = np.stack([kernel] * 6), np.stack([bias] * 6), np.ones(6)
    p = dense(topology, 0)
    for t in range(rounds):
        zk, zb = xk / w[:, None, None], xb / w[:, None]
        grads = [softmax_gradient(zk[i], zb[i], x[i, order[i, t]], y[i, order[i, t]])
                 for i in range(6)]
        xk = np.tensordot(p, xk - lr * np.stack([g[0] for g in grads]), 1)
        xb = p @ (xb - lr * np.stack([g[1] for g in grads]))
        w = p @ w
    got_kernel, got_bias = node_params(history.states)
    np.testing.assert_allclose(history.states["node"]["push_sum"].weight, w, rtol=1e-5)
    np.testing.assert_allclose(got_kernel, xk / w[:, None, None], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_bias, xb / w[:, None], rtol=1e-4, atol=1e-5)
    edges = int((topology.neighbours >= 0).sum())
    assert list(history["bytes_sent"]) == [edges * (5 * 3 + 3 + 1) * 4] * rounds
