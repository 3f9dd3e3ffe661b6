"""Cohorts a user controls (a schedule, a function of the round key, an availability trace)
and a data source that knows the round: a published FedAvg run replayed exactly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import bbjax
from bbjax.components import flax_model, padded_data_source, replay_data_source
from bbjax.modules import FedAvgRound
from bbjax.errors import SimulationError
from bbjax.simulation import Availability, Peers, Simulation, simulate
from bbjax.models import LogisticRegression, cross_entropy

N = 6


@pytest.fixture(scope="module")
def fedavg():
    """A FedAvg round (2 local steps) over clients of different sizes."""
    rng = np.random.default_rng(0)
    sizes = [5, 9, 12, 7, 20, 14]
    xs = [rng.normal(size=(n, 6)).astype(np.float32) for n in sizes]
    ys = [rng.integers(0, 3, n).astype(np.int32) for n in sizes]
    data = bbjax.data.FederatedData.from_clients(xs, ys)
    model = flax_model(LogisticRegression(6, 3, rngs=nnx.Rngs(0)), optax.sgd(0.3), cross_entropy)
    source = padded_data_source(data.x[0], data.y[0], int(data.sizes[0]), batch_size=3)
    compiled = bbjax.Compiler().bind("model", model).bind("data", source).compile(
        FedAvgRound(local_steps=2))
    return compiled, data


def _population(data, cohort):
    return {"server": 1, "client": Peers(N, init_args={"data": (data.x, data.y, data.sizes)},
                                         cohort=cohort)}


def _who_ran(before, after) -> list[int]:
    """The clients whose local model changed (trained) in the round."""
    kernels = [np.asarray(s["client"]["model"].params["out"]["kernel"]).reshape(N, -1)
               for s in (before, after)]
    return np.flatnonzero(np.any(kernels[0] != kernels[1], axis=1)).tolist()


def test_a_schedule_runs_its_rows_with_empty_slots(fedavg):
    compiled, data = fedavg
    schedule = np.array([[4, 0, 2], [1, -1, 5], [3, 2, -1]])
    sim = Simulation(compiled, _population(data, schedule))
    states = sim.init(jax.random.PRNGKey(0))
    step = jax.jit(sim.round)
    for r, row in enumerate(schedule):
        new, metrics = step(states, jax.random.PRNGKey(r), index=r)
        assert _who_ran(states, new) == sorted(row[row >= 0].tolist())
        assert int(metrics["participants"]) == int((row >= 0).sum())
        states = new
    with pytest.raises(SimulationError, match="outside the 3 rounds"):
        sim.round(states, jax.random.PRNGKey(0), index=3)
    with pytest.raises(SimulationError, match="cover 3 rounds; the run has rounds=4"):
        simulate(compiled, _population(data, schedule), 4, jax.random.PRNGKey(0))


def test_a_cohort_function_of_the_round_key_leaves_bad_ids_empty(fedavg):
    compiled, data = fedavg

    def cohort(key):  # two real draws, a repeat and an id out of range
        two = jax.random.choice(key, N, (2,), replace=False)
        return jnp.concatenate([two, two[:1], jnp.array([N + 3])])

    sim = Simulation(compiled, _population(data, cohort))
    states = sim.init(jax.random.PRNGKey(0))
    seen = set()
    for r in range(4):
        new, metrics = jax.jit(sim.round)(states, jax.random.PRNGKey(r))
        ran = _who_ran(states, new)
        assert len(ran) == 2 and int(metrics["participants"]) == 2
        seen.update(ran)
        states = new
    assert len(seen) > 2  # the key draws different clients in different rounds


def test_an_availability_trace_runs_the_available_or_draws_among_them(fedavg):
    compiled, data = fedavg
    masks = np.random.default_rng(3).random((4, N)) < 0.5
    masks[1] = False  # nobody is available in round 1
    masks[2, 0] = True
    for cohort, k in ((masks, None), (Availability(masks, k=2), 2)):
        sim = Simulation(compiled, _population(data, cohort))
        assert sim.groups["client"].running == (masks.sum(1).max() if k is None else k)
        states = sim.init(jax.random.PRNGKey(0))
        for r in range(4):
            new, metrics = jax.jit(sim.round)(states, jax.random.PRNGKey(r), index=r)
            ran = _who_ran(states, new)
            available = np.flatnonzero(masks[r]).tolist()
            assert set(ran) <= set(available)
            assert len(ran) == (len(available) if k is None else min(k, len(available)))
            assert int(metrics["participants"]) == len(ran)
            states = new


@pytest.mark.parametrize("cohort, message", [
    (np.array([[0, 0]]), "row 0 repeats a peer"),
    (np.array([[0, N]]), rf"schedule\[0, 1\] is {N}"),
    (np.array([0, 1]), r"integer array \[rounds, k\]"),
    (np.zeros((2, N + 1), np.int32), "more than the 6 peers"),
    (np.zeros((2, N - 1), bool), rf"bool array \[rounds, {N}\]"),
    (np.zeros((2, N), bool), "no peer available"),
    (Availability(np.ones((2, N), bool), k=0), r"Availability.k must be an int in \[1, 6\]"),
    (lambda key: jnp.zeros((2, 2), jnp.int32), "must return k integer ids"),
    (lambda key: jnp.zeros(3), "must return k integer ids"),
    (lambda key: 1 / 0, "fails on a key: ZeroDivisionError"),
    (2.5, "Peers.cohort must be an int in"),
])
def test_cohort_errors(cohort, message):
    with pytest.raises(SimulationError, match=message):
        Peers(N, cohort=cohort)


def _numpy_fedavg(x, y, sizes, schedule, rows, w, b, lr):
    """FedAvg in float64 numpy with the given cohorts and batch rows: softmax regression,
    plain SGD, the server averaging by example counts."""
    for r, cohort in enumerate(schedule):
        updates, weights = [], []
        for client in cohort[cohort >= 0]:
            wc, bc = w.copy(), b.copy()
            for step in rows[client, r]:
                xb, yb = x[client, step], y[client, step]
                logits = xb @ wc + bc
                p = np.exp(logits - logits.max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                p[np.arange(len(yb)), yb] -= 1.0
                wc -= lr * xb.T @ p / len(yb)
                bc -= lr * p.mean(0)
            updates.append((wc, bc))
            weights.append(float(sizes[client]))
        weights = np.asarray(weights) / np.sum(weights)
        w = sum(c * u[0] for c, u in zip(weights, updates))
        b = sum(c * u[1] for c, u in zip(weights, updates))
    return w, b


def test_a_published_schedule_and_batch_order_replay_exactly(fedavg):
    """Who trains in which round on which rows, given: bbjax's run is numpy's float64 run
    of the same FedAvg to float32 rounding."""
    _, data = fedavg
    rng = np.random.default_rng(7)
    rounds, steps, batch, lr = 4, 2, 3, 0.3
    schedule = np.stack([rng.choice(N, 3, replace=False) for _ in range(rounds)])
    sizes = np.asarray(data.sizes)
    rows = np.stack([[[rng.choice(sizes[c], batch, replace=False) for _ in range(steps)]
                      for _ in range(rounds)] for c in range(N)]).astype(np.int32)
    model = flax_model(LogisticRegression(6, 3, rngs=nnx.Rngs(0)), optax.sgd(lr), cross_entropy)
    source = replay_data_source(data.x[0], data.y[0], rows[0], int(sizes[0]))
    compiled = bbjax.Compiler().bind("model", model).bind("data", source).compile(
        FedAvgRound(local_steps=steps))
    population = {"server": 1, "client": Peers(
        N, init_args={"data": (data.x, data.y, rows, data.sizes)}, cohort=schedule)}
    history = simulate(compiled, population, rounds, jax.random.PRNGKey(0))
    start = model.init(jax.random.PRNGKey(0)).params["out"]  # the server's initial model
    w, b = _numpy_fedavg(np.asarray(data.x, np.float64), np.asarray(data.y), sizes, schedule,
                         rows, np.asarray(start["kernel"], np.float64),
                         np.asarray(start["bias"], np.float64), lr)
    got = history.states["server"]["model"].params["out"]
    assert not np.allclose(w, start["kernel"], atol=1e-3)  # the rounds moved the model
    np.testing.assert_allclose(got["kernel"][0], w, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(got["bias"][0], b, rtol=2e-5, atol=2e-6)


def test_a_cohort_reads_the_drawn_clients_data_in_place():
    """The round's working memory does not grow with the rows each client holds: the drawn
    clients' padded data is read from the stack, never copied (a copy of 4 drawn clients'
    1000 extra rows would be 4 * 1000 * 7 * 4 bytes)."""

    def temp_bytes(rows: int) -> int:
        rng = np.random.default_rng(0)
        xs = [rng.normal(size=(rows, 6)).astype(np.float32) for _ in range(12)]
        ys = [rng.integers(0, 3, rows).astype(np.int32) for _ in range(12)]
        data = bbjax.data.FederatedData.from_clients(xs, ys)
        model = flax_model(LogisticRegression(6, 3, rngs=nnx.Rngs(0)), optax.sgd(0.1),
                           cross_entropy)
        source = padded_data_source(data.x[0], data.y[0], rows, batch_size=5)
        compiled = bbjax.Compiler().bind("model", model).bind("data", source).compile(
            FedAvgRound(local_steps=2))
        sim = Simulation(compiled, {"server": 1, "client": Peers(
            12, init_args={"data": (data.x, data.y, data.sizes)}, cohort=4)})
        shapes = jax.eval_shape(sim.init, jax.random.PRNGKey(0))
        analysis = jax.jit(sim.round).lower(shapes, jax.random.PRNGKey(0)).compile()
        return analysis.memory_analysis().temp_size_in_bytes

    assert temp_bytes(1050) - temp_bytes(50) < 4 * 1000 * 7 * 4 // 4
