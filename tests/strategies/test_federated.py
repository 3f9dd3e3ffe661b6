"""Federated strategies run for real: FedYogi's server step, FedAvg's weighted mean, FedProx's
proximal term and the client selections, each against an independent float64 reference."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbjax.simulation import Peers
from bbjax.strategies import config as sc
from bbjax.strategies import workload
from bbjax.strategies.build import build
from bbjax.strategies.federated import cohort, yogi_rule

N = 10
SMALL = {"rounds": 2, "training.max_client_size": 200, "training.local_steps": 1,
         "training.batch_size": 5, "training.learning_rate": 0.05}
"""The sizes of the CLI tests' federated runs (the same programs: one compilation)."""
FEDAVG = Path(__file__).parents[2] / "examples" / "strategies" / "federated_fedavg.json"


def federated(aggregation=None, selection=None, local_steps=1, **extra):
    base = sc.load(FEDAVG, {**SMALL, "training.local_steps": local_steps}).to_json()
    return sc.parse({**base, "aggregation": aggregation or {"method": "FedAvg"},
                     "client_selection": selection or {"method": "All"}, **extra})


def client_params(run, history):
    """float64 [N, P]: every client's model parameters, flattened."""
    model = run.bindings["model"]
    stacked = jax.vmap(lambda s: model.call("params", s)[1])(history.states["client"]["model"])
    return np.concatenate([np.asarray(x, np.float64).reshape(N, -1)
                           for x in jax.tree.leaves(stacked)], axis=1)


def server_params(run, history):
    model = run.bindings["model"]
    server = jax.tree.map(lambda a: a[0], history.states["server"]["model"])
    return np.concatenate([np.asarray(x, np.float64).ravel()
                           for x in jax.tree.leaves(model.call("params", server)[1])])


def initial_params(run):
    model = run.bindings["model"]
    params = model.init(jax.random.PRNGKey(0)).params
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(params)])


def test_fedyogi_server_step_equals_the_numpy_formula():
    rng = np.random.default_rng(7)
    agg = sc.FedYogi(beta1=0.8, beta2=0.95, tau=1e-2, eta=0.3)
    rule = yogi_rule(agg)
    shapes = {"b": (4,), "w": (3, 4)}
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    state = rule.init(jax.tree.map(jnp.asarray, params))
    ref = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros(s) for k, s in shapes.items()}
    v = {k: np.zeros(s) for k, s in shapes.items()}
    for _ in range(4):
        clients = {k: rng.normal(size=(5, *s)).astype(np.float32) for k, s in shapes.items()}
        weights = rng.integers(1, 50, size=5).astype(np.float32)
        out = rule.apply(state, jax.tree.map(jnp.asarray, params),
                         jax.tree.map(jnp.asarray, clients), jnp.asarray(weights),
                         jnp.ones(5, bool))
        state = out.state
        for k in shapes:
            mean = np.tensordot(weights / weights.sum(), clients[k].astype(np.float64), 1)
            delta = mean - ref[k]
            m[k] = agg.beta1 * m[k] + (1 - agg.beta1) * delta
            v[k] = v[k] - (1 - agg.beta2) * delta**2 * np.sign(v[k] - delta**2)
            ref[k] = ref[k] + agg.eta * m[k] / (np.sqrt(v[k]) + agg.tau)
        params = {k: np.asarray(out.params[k]) for k in shapes}
        for k in shapes:
            np.testing.assert_allclose(params[k], ref[k], rtol=1e-4, atol=1e-5)
            ref[k] = params[k].astype(np.float64)  # continue from what bbjax holds


def plain_run(aggregation=None, local_steps=1, rounds=1):
    """A built federated strategy and its History after ``rounds`` rounds."""
    run = build(federated(aggregation, local_steps=local_steps))
    return run, run.run(rounds=rounds)


def test_fedavg_keeps_the_example_weighted_mean():
    run, history = plain_run(rounds=SMALL["rounds"])  # the CLI test's program
    train, _ = workload.peer_data(run.strategy.training, N)
    sizes = np.asarray(train.sizes, np.float64)
    assert np.ptp(sizes) > 0  # unequal clients, or weighting would not show
    clients = client_params(run, history)
    weighted = sizes @ clients / sizes.sum()
    np.testing.assert_allclose(server_params(run, history), weighted, rtol=1e-5, atol=1e-6)
    unweighted = clients.mean(axis=0)
    assert np.abs(unweighted - weighted).max() > 1e-4  # somatize's unweighted mean differs
    assert history["participants"].tolist() == [N, N]


@pytest.mark.slow
def test_fedprox_adds_the_proximal_gradient():
    """Step 1 is plain SGD (the proximal gradient vanishes at the anchor w0); step 2 adds
    lr·mu·(w1 − w0): w2_prox = w2_plain − lr·mu·(w1 − w0), on the same batches."""
    (run1, h1), (_, h2) = plain_run(), plain_run(local_steps=2)
    prox, hp = plain_run({"method": "FedProx", "mu": 4.0}, local_steps=2)
    w0, w1 = initial_params(run1), client_params(run1, h1)
    lr, mu = SMALL["training.learning_rate"], prox.strategy.aggregation.mu
    expected = client_params(run1, h2) - lr * mu * (w1 - w0)
    np.testing.assert_allclose(client_params(prox, hp), expected, rtol=1e-4, atol=1e-6)
    assert np.abs(lr * mu * (w1 - w0)).max() > 1e-3  # the term is visible


def test_random_selection_draws_ceil_fraction_distinct_clients():
    strategy = federated({"method": "FedYogi", "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
                         {"method": "Random", "fraction": 0.25})
    k = math.ceil(0.25 * N)
    assert cohort(strategy) == k
    plan = Peers(N, cohort=cohort(strategy)).plan
    for r in range(40):
        ids = np.asarray(plan.ids(jax.random.PRNGKey(r), jnp.int32(r), None, N))
        assert ids.shape == (k,) and len(set(ids.tolist())) == k
        assert ids.min() >= 0 and ids.max() < N


@pytest.mark.slow
def test_random_selection_runs_ceil_fraction_clients_a_round():
    strategy = federated({"method": "FedYogi", "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
                         {"method": "Random", "fraction": 0.25})
    history = build(strategy).run(rounds=3)
    assert history["participants"].tolist() == [math.ceil(0.25 * N)] * 3
    assert np.isfinite(history["accuracy"]).all()


def test_by_capability_never_selects_an_untagged_client():
    tags = [["gpu"] if i in (1, 4, 8) else (["fast"] if i == 2 else []) for i in range(N)]
    strategy = federated(selection={"method": "ByCapability", "required_tags": ["gpu"]},
                         client_tags=tags)
    run = build(strategy)
    history = run.run(rounds=2)
    assert history["participants"].tolist() == [3, 3]
    moved = np.abs(client_params(run, history) - initial_params(run)).max(axis=1) > 0
    assert moved.tolist() == [i in (1, 4, 8) for i in range(N)]


def test_local_pools_the_rows_a_federated_run_spreads():
    training = sc.parse({"type": "Local", "training": {"max_client_size": 30}}).training
    train, test = workload.peer_data(training, 4)
    one = workload.pooled(train)
    assert one.num_clients == 1 and int(one.sizes[0]) == int(np.sum(train.sizes))
    x, y = workload.pooled_rows(train)
    np.testing.assert_array_equal(one.x[0, :len(x)], x)
    np.testing.assert_array_equal(np.asarray(one.y[0, :len(y)]), y)
    np.testing.assert_array_equal(x[:int(train.sizes[0])], train.x[0, :int(train.sizes[0])])
    assert int(workload.pooled(test).sizes[0]) == int(np.sum(test.sizes))
