"""Federated strategies run for real: FedYogi's server step, FedAvg's weighted mean, FedProx's
proximal term and the client selections, each against an independent float64 reference."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbjax.strategies import config as sc
from bbjax.strategies import workload
from bbjax.strategies.build import build
from bbjax.strategies.federated import cohort, yogi_rule

N = 10
TRAINING = {"max_client_size": 200, "batch_size": 5, "learning_rate": 0.05, "seed": 3}


def federated(aggregation=None, selection=None, local_steps=2, **extra):
    return sc.parse({"type": "Federated", "num_clients": N, "rounds": 1,
                     "aggregation": aggregation or {"method": "FedAvg"},
                     "client_selection": selection or {"method": "All"},
                     "training": {**TRAINING, "local_steps": local_steps}, **extra})


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


@pytest.fixture(scope="module")
def plain_runs():
    """FedAvg with 1 and with 2 local steps, and FedProx(mu) with 2: one round each."""
    runs = {}
    for name, aggregation, steps in (("avg1", None, 1), ("avg2", None, 2),
                                     ("prox2", {"method": "FedProx", "mu": 4.0}, 2)):
        run = build(federated(aggregation, local_steps=steps))
        runs[name] = (run, run.run())
    return runs


def test_fedavg_keeps_the_example_weighted_mean(plain_runs):
    run, history = plain_runs["avg2"]
    train, _ = workload.peer_data(run.strategy.training, N)
    sizes = np.asarray(train.sizes, np.float64)
    assert np.ptp(sizes) > 0  # unequal clients, or weighting would not show
    clients = client_params(run, history)
    weighted = sizes @ clients / sizes.sum()
    np.testing.assert_allclose(server_params(run, history), weighted, rtol=1e-5, atol=1e-6)
    unweighted = clients.mean(axis=0)
    assert np.abs(unweighted - weighted).max() > 1e-4  # somatize's unweighted mean differs
    assert history["participants"].tolist() == [N]


def test_fedprox_adds_the_proximal_gradient(plain_runs):
    """Step 1 is plain SGD (the proximal gradient vanishes at the anchor w0); step 2 adds
    lr·mu·(w1 − w0): w2_prox = w2_plain − lr·mu·(w1 − w0), on the same batches."""
    (run1, h1), (_, h2), (prox, hp) = (plain_runs[k] for k in ("avg1", "avg2", "prox2"))
    w0, w1 = initial_params(run1), client_params(run1, h1)
    lr, mu = TRAINING["learning_rate"], prox.strategy.aggregation.mu
    expected = client_params(run1, h2) - lr * mu * (w1 - w0)
    np.testing.assert_allclose(client_params(prox, hp), expected, rtol=1e-4, atol=1e-6)
    assert np.abs(lr * mu * (w1 - w0)).max() > 1e-3  # the term is visible


def test_random_selection_draws_ceil_fraction_distinct_clients():
    strategy = federated({"method": "FedYogi", "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
                         {"method": "Random", "fraction": 0.25}, local_steps=1)
    k = math.ceil(0.25 * N)
    assert cohort(strategy) == k
    run = build(strategy)
    clients = run.population["client"]
    for r in range(40):
        ids = np.asarray(clients.plan.ids(jax.random.PRNGKey(r), jnp.int32(r), None, N))
        assert ids.shape == (k,) and len(set(ids.tolist())) == k
        assert ids.min() >= 0 and ids.max() < N
    history = run.run(rounds=3)
    assert history["participants"].tolist() == [k] * 3
    assert np.isfinite(history["accuracy"]).all()


def test_by_capability_never_selects_an_untagged_client():
    tags = [["gpu"] if i in (1, 4, 8) else (["fast"] if i == 2 else []) for i in range(N)]
    strategy = federated(selection={"method": "ByCapability", "required_tags": ["gpu"]},
                         local_steps=1, client_tags=tags)
    run = build(strategy)
    history = run.run(rounds=2)
    assert history["participants"].tolist() == [3, 3]
    moved = np.abs(client_params(run, history) - initial_params(run)).max(axis=1) > 0
    assert moved.tolist() == [i in (1, 4, 8) for i in range(N)]
