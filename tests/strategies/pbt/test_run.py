"""``pbt.run``: the vmapped population equals its members trained one by one with the same
keys, one compilation whatever the number of generations, failing members, the record."""

from __future__ import annotations

import collections
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bbjax.errors import DivergenceError, InvalidArgument
from bbjax.strategies import pbt

SPACE = pbt.SearchSpace({"lr": pbt.Float(0.05, 0.3), "k": pbt.Int(1, 3)})
TARGET = jnp.array([1.0, -2.0, 3.0])
TRACES: collections.Counter = collections.Counter()


def init(key, h):
    return {"w": jax.random.normal(key, (3,)), "t": jnp.zeros((), jnp.int32)}


def train_step(s, h, key):
    TRACES["train_step"] += 1
    g = 2 * (s["w"] - TARGET) + 0.1 * jax.random.normal(key, (3,))
    return {"w": s["w"] - h["lr"] * h["k"] * g, "t": s["t"] + 1}


def evaluate(s, h, key):
    TRACES["evaluate"] += 1
    return {"fitness": -jnp.sum((s["w"] - TARGET) ** 2) + 0.01 * jax.random.normal(key),
            "steps": s["t"]}


def _run(generations, n=4, steps=3, **kw):
    return pbt.run(init, train_step, evaluate, SPACE, jax.random.key(42), population_size=n,
                   generations=generations, steps_per_generation=steps, **kw)


def test_the_population_equals_its_members_trained_alone_and_compiles_once():
    TRACES.clear()
    n, steps = 4, 3
    record = _run(2, n, steps)
    assert dict(TRACES) == {"train_step": 2, "evaluate": 1}  # a shape check + one trace
    init_key, space_key, run_key = jax.random.split(jax.random.key(42), 3)
    h0 = pbt.decode(SPACE, pbt.sample(space_key, SPACE, n))
    for name in SPACE.names:
        np.testing.assert_array_equal(record.hyperparameters[name][0], h0[name])
    one_step = jax.jit(train_step)
    one_eval = jax.jit(evaluate)

    def alone(state, values, g, j):
        step_key, _ = jax.random.split(jax.random.fold_in(run_key, g))
        train_key, eval_key = jax.random.split(step_key)
        for k in jax.random.split(jax.random.split(train_key, n)[j], steps):
            state = one_step(state, values, k)
        return state, one_eval(state, values, jax.random.split(eval_key, n)[j])

    trained = []
    for j in range(n):
        values = {name: h0[name][j] for name in SPACE.names}
        state, score = alone(init(jax.random.split(init_key, n)[j], values), values, 0, j)
        trained.append(state)
        np.testing.assert_allclose(record.fitness[0, j], score["fitness"], rtol=1e-6)
    for j in range(n):  # generation 1 starts from the parent's state, with new values
        values = {name: jnp.asarray(record.hyperparameters[name][1, j])
                  for name in SPACE.names}
        state, score = alone(trained[record.parents[1, j]], values, 1, j)
        np.testing.assert_allclose(record.states["w"][j], state["w"], rtol=1e-6, atol=1e-7)
        assert int(record.states["t"][j]) == 2 * steps
        np.testing.assert_allclose(record.fitness[1, j], score["fitness"], rtol=1e-6)
    TRACES.clear()
    longer = _run(5, n, steps)
    # at most the (cached) shape check and one trace, not one more per generation
    assert TRACES["evaluate"] == 1 and TRACES["train_step"] in (1, 2)
    assert longer.rounds == 5 and longer.metrics["steps"].tolist() == [3, 6, 9, 12, 15]


def test_the_record_keeps_lineage_and_writes_json(tmp_path):
    record = _run(6, n=8, steps=1, exploit=pbt.Truncation(0.25),
                  explore=pbt.Perturbation(0.2))
    assert record.parents.shape == record.fitness.shape == (6, 8)
    assert record.parents[0].tolist() == list(range(8))
    for g in range(1, 6):
        copied = record.parents[g] != np.arange(8)
        assert copied.sum() <= 2                      # cutoff ceil(8 · 0.25) = 2
        prev = record.fitness[g - 1]
        assert (prev[record.parents[g][copied]] >= prev[copied]).all()
        for j in np.flatnonzero(copied):              # a copy starts with its parent's values
            ratio = record.hyperparameters["lr"][g, j] / record.hyperparameters["lr"][
                g - 1, record.parents[g, j]]
            assert 0.8 - 1e-6 <= ratio <= 1.2 + 1e-6
    best = record.best()
    assert record.fitness[-1, best] == record.fitness[-1].max()
    line = record.ancestry(best)
    assert line[-1] == best
    for g in range(1, 6):
        assert line[g - 1] == record.parents[g, line[g]]
    np.testing.assert_allclose(record.metrics["best_fitness"], record.fitness.max(axis=1))
    np.testing.assert_allclose(record.metrics["mean_fitness"], record.fitness.mean(axis=1),
                               rtol=1e-6)
    top = record.fitness.argmax(axis=1)
    np.testing.assert_allclose(record.metrics["best_lr"],
                               record.hyperparameters["lr"][np.arange(6), top])
    written = json.loads(record.to_json(tmp_path / "m.json").read_text())
    assert written["population"]["parents"] == record.parents.tolist()
    assert len(written["rounds"]) == 6 and "best_k" in written["rounds"][0]
    with pytest.raises(InvalidArgument, match="slot"):
        record.ancestry(8)


def test_failing_members_and_an_all_failing_generation():
    def nan_for_k3(s, h, key):
        new = train_step(s, h, key)
        return {**new, "w": jnp.where(h["k"] == 3, jnp.nan, new["w"])}

    record = pbt.run(init, nan_for_k3, evaluate, SPACE, jax.random.key(1), population_size=8,
                     generations=1)
    failed = record.hyperparameters["k"][0] == 3
    assert failed.any() and not failed.all()
    assert (record.fitness[0][failed] == -np.inf).all()
    assert np.isfinite(record.fitness[0][~failed]).all()
    assert record.metrics["failed"][0] == failed.sum()
    np.testing.assert_allclose(record.metrics["mean_fitness"][0],
                               record.fitness[0][~failed].mean(), rtol=1e-6)

    def nothing(s, h, key):
        return jnp.nan

    with pytest.raises(DivergenceError, match="every member of generation 0") as info:
        pbt.run(init, train_step, nothing, SPACE, jax.random.key(1), population_size=4,
                generations=3)
    assert info.value.round == 0 and info.value.history.rounds == 1
    assert (info.value.history.fitness == -np.inf).all()
    kept_on = pbt.run(init, train_step, nothing, SPACE, jax.random.key(1), population_size=4,
                      generations=2, allow_divergence=True)
    assert kept_on.rounds == 2 and kept_on.diverged_at == 0


def test_bad_member_functions_and_counts_are_named():
    with pytest.raises(InvalidArgument, match="train_step must return"):
        pbt.run(init, lambda s, h, k: {"w": s["w"][:2], "t": s["t"]}, evaluate, SPACE,
                jax.random.key(0), population_size=2, generations=1)
    with pytest.raises(InvalidArgument, match="without 'fitness'"):
        pbt.run(init, train_step, lambda s, h, k: {"loss": 0.0}, SPACE, jax.random.key(0),
                population_size=2, generations=1)
    with pytest.raises(InvalidArgument, match="one scalar a member"):
        pbt.run(init, train_step, lambda s, h, k: s["w"], SPACE, jax.random.key(0),
                population_size=2, generations=1)
    with pytest.raises(InvalidArgument, match="SearchSpace"):
        pbt.run(init, train_step, evaluate, {"lr": pbt.Float(0, 1)}, jax.random.key(0),
                population_size=2, generations=1)
    with pytest.raises(InvalidArgument, match="generations"):
        _run(0)
    with pytest.raises(InvalidArgument, match="at least 2"):
        _run(1, n=1)


def test_with_hyperparams_writes_an_injected_learning_rate():
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    params = {"w": jnp.ones(3)}
    state = pbt.with_hyperparams(opt.init(params), {"learning_rate": jnp.float32(0.5)})
    updates, _ = opt.update({"w": jnp.array([1.0, 2.0, -4.0])}, state)
    np.testing.assert_allclose(updates["w"], [-0.5, -1.0, 2.0])
    with pytest.raises(InvalidArgument, match="injects"):
        pbt.with_hyperparams(state, {"momentum": 0.9})
    with pytest.raises(InvalidArgument, match="inject_hyperparams"):
        pbt.with_hyperparams(optax.sgd(0.1).init(params), {"learning_rate": 0.5})


def test_the_record_reports_a_categoricals_choice_not_its_index():
    from bbjax.strategies.pbt.history import GenerationRecord

    space = pbt.SearchSpace({"momentum": pbt.Categorical((0.0, 0.5, 0.9)),
                             "opt": pbt.Categorical(("sgd", "adam")),
                             "lr": pbt.Float(0.01, 0.1)})
    rng = np.random.default_rng()
    record = GenerationRecord(space, 4)
    momenta, opts, lrs = rng.integers(0, 3, 4), rng.integers(0, 2, 4), rng.uniform(0.01, 0.1, 4)
    fitness = rng.permutation(4).astype(np.float32)
    record.add(fitness, {}, {"momentum": momenta, "opt": opts, "lr": lrs})
    metrics = record.history({}, 0.0, 0.0, None).metrics
    top = int(np.argmax(fitness))
    assert metrics["best_momentum"][0] == (0.0, 0.5, 0.9)[momenta[top]]
    assert metrics["best_opt_index"][0] == opts[top] and "best_opt" not in metrics
    np.testing.assert_allclose(metrics["best_lr"][0], lrs[top])
