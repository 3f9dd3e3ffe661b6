"""D-PSGD against a float64 numpy loop of Lian et al.'s update, and the evaluator."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import bbjax
from bbjax.errors import InvalidArgument
from bbjax.strategies.decentralized.dpsgd import DPSGDRound
from bbjax.strategies.decentralized.gossip import mixing_weights, population
from bbjax.strategies.decentralized.metrics import evaluator
from bbjax.strategies.decentralized.topology import exponential
from tests.strategies.decentralized.decentralized_reference import (
    compile_round,
    dense,
    initial_params,
    irregular_graph,
    logistic_setup,
    node_params,
    softmax_gradient,
)


def test_dpsgd_equals_the_papers_update_per_node():
    rng = np.random.default_rng()
    rounds, lr = 3, 0.5
    topology = irregular_graph(7, rng, chords=4)
    model, source, data_args, x, y, order = logistic_setup(7, rounds, rng, learning_rate=lr)
    bindings = {"model": model, "data": source, "weights": mixing_weights(topology)}
    test_x = rng.normal(size=(30, 5)).astype(np.float32)
    test_y = rng.integers(0, 3, 30).astype(np.int32)
    history = bbjax.simulate(compile_round(DPSGDRound(), bindings),
                             population(topology, data_args), rounds, jax.random.key(1),
                             bindings=bindings, evaluate=evaluator(model, test_x, test_y),
                             eval_every=1)

    kernel, bias = initial_params(model)
    kernels, biases = np.stack([kernel] * 7), np.stack([bias] * 7)
    losses = []
    for t in range(rounds):
        w = dense(topology, t)
        grads = [softmax_gradient(kernels[i], biases[i], x[i, order[i, t]], y[i, order[i, t]])
                 for i in range(7)]
        logits = [x[i, order[i, t]] @ kernels[i] + biases[i] for i in range(7)]
        losses.append(np.mean([np.mean(np.log(np.exp(l).sum(1)) - l[np.arange(4),
                                                                    y[i, order[i, t]]])
                               for i, l in enumerate(logits)]))
        kernels = np.tensordot(w, kernels, 1) - lr * np.stack([g[0] for g in grads])
        biases = w @ biases - lr * np.stack([g[1] for g in grads])

    got_kernel, got_bias = node_params(history.states)
    np.testing.assert_allclose(got_kernel, kernels, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_bias, biases, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(history["train_loss"], losses, rtol=1e-5)
    mean_kernel, mean_bias = kernels.mean(0), biases.mean(0)
    spread = (((kernels - mean_kernel) ** 2).sum() + ((biases - mean_bias) ** 2).sum()) / 7
    logits = test_x @ mean_kernel + mean_bias
    nll = np.log(np.exp(logits).sum(1)) - logits[np.arange(30), test_y]
    np.testing.assert_allclose(history["consensus_distance"][-1], spread, rtol=1e-3)
    np.testing.assert_allclose(history["loss"][-1], nll.mean(), rtol=1e-5)
    assert history["accuracy"][-1] == pytest.approx(np.mean(logits.argmax(1) == test_y))


def test_dpsgd_runs_on_the_directed_exponential_graph_and_learns():
    rng = np.random.default_rng()
    topology = exponential(8)                       # directed, doubly stochastic
    rounds = 25
    model, source, data_args, x, y, _ = logistic_setup(8, rounds, rng, learning_rate=0.5)
    y = (x[..., 0] > 0).astype(np.int32)            # a learnable rule, the same everywhere
    data_args = {"data": (x, y, data_args["data"][2])}
    bindings = {"model": model, "data": source, "weights": mixing_weights(topology)}
    history = bbjax.simulate(compile_round(DPSGDRound(), bindings),
                             population(topology, data_args), rounds, jax.random.key(2),
                             bindings=bindings,
                             evaluate=evaluator(model, x.reshape(-1, 5), y.reshape(-1)),
                             eval_every=5)
    assert list(history["bytes_sent"]) == [8 * 3 * (5 * 3 + 3) * 4] * rounds
    assert history["accuracy"][-1] > 0.85
    assert np.mean(history["train_loss"][-5:]) < 0.7 * np.mean(history["train_loss"][:5])


def test_evaluator_refuses_rows_that_do_not_line_up():
    rng = np.random.default_rng(0)
    model = logistic_setup(2, 1, rng)[0]
    with pytest.raises(InvalidArgument, match="one leading axis"):
        evaluator(model, np.zeros((5, 5)), np.zeros(4, np.int32))
