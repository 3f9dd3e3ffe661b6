"""PBT over federated runs: members equal separately simulated runs, exploit copies whole
members, no recompilation across generations, the server rate aggregator equals FedAdam."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import bbjax
from bbjax import aggregators
from bbjax.components import flax_model, padded_data_source, rule_aggregator
from bbjax.errors import ConfigError, DivergenceError, InvalidArgument, SimulationError
from bbjax.models import LogisticRegression, cross_entropy
from bbjax.modules import FedAvgRound
from bbjax.simulation import Simulation
from bbjax.strategies.config import Training
from bbjax.strategies.pbt import (
    Categorical,
    Float,
    Perturbation,
    SearchSpace,
    Truncation,
    sample,
)
from bbjax.strategies.pbt import federated as fed

pbt_run = importlib.import_module("bbjax.strategies.pbt.run")  # the package's `run` is the function

CLIENTS, COHORT, STEPS, ROUNDS, P = 6, 3, 2, 2, 4
SPACE = SearchSpace({"client_lr": Float(0.01, 0.2), "server_lr": Float(0.01, 0.3)})
SPACE_JSON = SearchSpace({"client_learning_rate": Float(0.001, 0.1),
                          "server_learning_rate": Float(0.001, 0.1)})


def _setup(client_optimizer, aggregator_of):
    data = bbjax.data.synthetic(1.0, 1.0, num_clients=CLIENTS, seed=0, max_size=40)
    train, test = bbjax.data.train_test_split(jax.random.PRNGKey(0), data, test_fraction=0.25)
    model = flax_model(LogisticRegression(60, 10, rngs=nnx.Rngs(0)), client_optimizer,
                       cross_entropy)
    source = padded_data_source(train.x[0], train.y[0], int(train.sizes[0]), batch_size=5)
    aggregator = aggregator_of(model.init(jax.random.PRNGKey(0)).params)
    bindings = {"model": model, "data": source, "aggregator": aggregator}
    compiler = bbjax.Compiler()
    for slot, component in bindings.items():
        compiler = compiler.bind(slot, component)
    compiled = compiler.compile(FedAvgRound(STEPS, num_clients=COHORT, aggregator=True))
    population = {"server": bbjax.Peers(1), "client": bbjax.Peers(
        CLIENTS, init_args={"data": (train.x, train.y, train.sizes)}, cohort=COHORT)}
    x = jnp.asarray(test.x).reshape(-1, 60)
    y, mask = jnp.asarray(test.y).reshape(-1), jnp.asarray(test.mask).reshape(-1)

    def evaluate(states):
        server = jax.tree.map(lambda a: a[0], states["server"]["model"])
        logits = model.call("forward", server, x)[1]
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return {"fitness": -jnp.sum(jnp.where(mask, losses, 0)) / mask.sum(),
                "accuracy": jnp.sum((jnp.argmax(logits, -1) == y) & mask) / mask.sum()}

    return compiled, population, bindings, evaluate


@pytest.fixture(scope="module")
def world():
    """A population of 4 and its first generation (run's programs, which the 4-generation
    ``record`` run then finds in the compilation cache)."""
    compiled, population, bindings, evaluate = _setup(
        optax.inject_hyperparams(optax.sgd)(learning_rate=0.05),
        lambda init: fed.server_rate_aggregator("fedadam", COHORT, init, 0.1))
    simulation = Simulation(compiled, population)
    pop = fed.FederatedPopulation(simulation, {"client_lr": fed.CLIENT_LEARNING_RATE,
                                               "server_lr": fed.SERVER_LEARNING_RATE},
                                  evaluate, ROUNDS)
    key = jax.random.PRNGKey(7)
    first = fed.run(pop, SPACE, key, population_size=P, generations=1)
    members_key, space_key, _ = jax.random.split(key, 3)
    values = fed.numbers(SPACE, sample(space_key, SPACE, P))
    start = jax.jit(pop.init)(members_key, values, pop.data)
    return {"compiled": compiled, "population": population, "bindings": bindings, "pop": pop,
            "key": members_key, "values": values, "start": start, "trained": first.states,
            "first": first, "evaluate": evaluate}


def _copy(tree):
    return jax.tree.map(jnp.array, tree)


def test_members_equal_separate_simulate_runs_with_the_same_keys(world):
    pop, first = world["pop"], world["first"]
    losses = []
    for i in range(P):
        alone = bbjax.simulate(world["compiled"], world["population"], ROUNDS,
                               fed.member_key(world["key"], i), bindings=world["bindings"],
                               initial_states=_copy(pop.member(world["start"], i)))
        chex.assert_trees_all_close(pop.member(world["trained"], i), alone.states,
                                    rtol=2e-5, atol=1e-6)
        fitness = world["evaluate"](alone.states)["fitness"]
        assert first.fitness[0, i] == pytest.approx(float(fitness), rel=1e-5)
        losses.append(alone["train_loss"][-1])
    assert first["train_loss"][0] == pytest.approx(losses[first.best()], rel=1e-5)
    assert len(set(np.round(first.fitness[0], 4))) == P
    np.testing.assert_allclose(first.hyperparameters["client_lr"][0],
                               world["values"]["client_lr"])


@pytest.mark.slow
def test_a_member_equals_a_run_with_its_hyperparameters_baked_in(world):
    """Member 1 against FedAdam(eta) and SGD(lr) as plain Python floats: an independent
    build of the same run, no Place and no rate in any state."""
    lr, eta = (float(world["values"][n][1]) for n in ("client_lr", "server_lr"))
    compiled, population, bindings, evaluate = _setup(
        optax.sgd(lr), lambda init: rule_aggregator(aggregators.fedadam(eta=eta), COHORT,
                                                    init))
    baked = bbjax.simulate(compiled, population, ROUNDS, fed.member_key(world["key"], 1),
                           bindings=bindings)
    ours = world["pop"].member(world["trained"], 1)
    chex.assert_trees_all_close(ours["server"]["model"].params,
                                baked.states["server"]["model"].params, rtol=1e-4, atol=1e-6)
    chex.assert_trees_all_close(ours["client"]["model"].params,
                                baked.states["client"]["model"].params, rtol=1e-4, atol=1e-6)
    assert world["first"].fitness[0, 1] == pytest.approx(
        float(evaluate(baked.states)["fitness"]), rel=1e-4)


def test_clients_data_is_shared_not_copied_per_member(world):
    x = world["population"]["client"].init_args["data"][0]
    shared = [a.shape for a in world["trained"].shared]
    stacked = [a.shape for a in world["trained"].stacked]
    assert x.shape in shared
    assert (P, *x.shape) not in stacked
    assert all(s[0] == P for s in stacked)
    np.testing.assert_allclose(world["pop"].values(world["trained"])["server_lr"],
                               world["values"]["server_lr"], rtol=1e-7)


@pytest.mark.parametrize("factor", [0.0, 0.5])
def test_exploit_copies_the_whole_member_and_explore_rewrites_its_rates(world, factor):
    pop, trained = world["pop"], world["trained"]
    hparams = dict(world["values"])
    fitness = jnp.array([-3.0, -1.0, -2.0, -4.0])  # slot 3 worst, slot 1 best
    evolved, new, lineage = jax.jit(
        lambda m, h, f, k: pop.evolve(m, h, f, k, SPACE, exploit=Truncation(0.2),
                                      explore=Perturbation(factor)))(
        trained, hparams, fitness, jax.random.PRNGKey(3))
    np.testing.assert_array_equal(lineage.parent, [0, 1, 2, 1])
    np.testing.assert_array_equal(lineage.explored, [False, False, False, True])
    read = pop.values(evolved)
    for name in hparams:
        np.testing.assert_allclose(read[name], new[name], rtol=1e-7)
        np.testing.assert_allclose(new[name][:3], hparams[name][:3])
        if factor == 0.0:
            np.testing.assert_allclose(new[name][3], hparams[name][1])
        else:
            assert new[name][3] != hparams[name][1]
            assert abs(new[name][3] / hparams[name][1] - 1) <= factor
    copy = pop.member(evolved, 3)
    if factor != 0.0:  # put the rates back: every other leaf must be the best member's
        copy = fed.SERVER_LEARNING_RATE.write(
            fed.CLIENT_LEARNING_RATE.write(copy, hparams["client_lr"][1]),
            hparams["server_lr"][1])
    chex.assert_trees_all_equal(copy, pop.member(trained, 1))
    for i in range(3):
        chex.assert_trees_all_equal(pop.member(evolved, i), pop.member(trained, i))
    assert not np.allclose(pop.member(trained, 3)["server"]["model"].params["out"]["kernel"],
                           copy["server"]["model"].params["out"]["kernel"])
    np.testing.assert_array_equal(evolved.keys, trained.keys)  # members keep their keys


@pytest.fixture(scope="module")
def record(world):
    """A 4-generation run, with the number of compilation events seen at each
    generation's record."""
    seen, at = [], []

    def listen(event, *args, **kwargs):
        if "compil" in event or "lower" in event:
            seen.append(event)

    class Counting(pbt_run.GenerationRecord):
        def add(self, *args):
            at.append(len(seen))
            super().add(*args)

    jax.monitoring.register_event_duration_secs_listener(listen)
    jax.monitoring.register_event_listener(listen)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pbt_run, "GenerationRecord", Counting)
        try:
            history = fed.run(world["pop"], SPACE, jax.random.PRNGKey(11), population_size=P,
                              generations=4, exploit=Truncation(0.25),
                              explore=Perturbation(0.2))
        finally:
            jax.monitoring.unregister_event_duration_listener(listen)
            jax.monitoring.unregister_event_listener(listen)
    return history, at, seen


def test_no_compilation_between_generations(record):
    _, at, seen = record
    assert at[0] > 0 and seen  # the listener sees the run's own compilations
    assert at[0] == at[1] == at[2] == at[3], seen[at[0]:]


def test_run_records_fitness_hyperparameters_and_lineage(record, world):
    history, _, _ = record
    assert history.fitness.shape == (4, 4) and history.parents.shape == (4, 4)
    np.testing.assert_array_equal(history.parents[0], np.arange(4))
    np.testing.assert_allclose(history["best_fitness"], history.fitness.max(axis=1))
    np.testing.assert_allclose(history["mean_fitness"], history.fitness.mean(axis=1),
                               rtol=1e-6)
    for g in range(1, 4):
        worst = int(np.argmin(history.fitness[g - 1]))
        best = int(np.argmax(history.fitness[g - 1]))
        assert history.parents[g, worst] == best  # Truncation(0.25) of 4: one copy
        kept = history.parents[g] == np.arange(4)
        kept[worst] = False
        for name in SPACE.names:
            values = history.hyperparameters[name]
            np.testing.assert_allclose(values[g, kept], values[g - 1, kept])
            ratio = values[g, worst] / values[g - 1, best]
            assert 0.8 <= ratio <= 1.2
    final = world["pop"].values(history.states)
    for name in SPACE.names:
        np.testing.assert_allclose(final[name], history.hyperparameters[name][-1], rtol=1e-7)
    top = history.best()
    accuracy = world["evaluate"](world["pop"].member(history.states, top))["accuracy"]
    assert history["accuracy"][-1] == pytest.approx(float(accuracy), rel=1e-5)


# --- the server rate aggregator ----------------------------------------------------------------

def _fedadam_reference(rounds, global_params, eta, beta_1=0.9, beta_2=0.99, tau=1e-9):
    """Flower's FedAdam in float64 numpy over ``rounds`` of (client stack, weights, mask)."""
    x = np.asarray(global_params, np.float64)
    m = v = np.zeros_like(x)
    for t, (clients, weights, mask) in enumerate(rounds, start=1):
        w = np.where(mask, weights, 0.0)
        delta = np.tensordot(w / w.sum(), clients, 1) - x
        m = beta_1 * m + (1 - beta_1) * delta
        v = beta_2 * v + (1 - beta_2) * delta ** 2
        lr = eta * np.sqrt(1 - beta_2 ** (t + 1)) / (1 - beta_1 ** (t + 1))
        x = x + lr * m / (np.sqrt(v) + tau)
    return x


@pytest.mark.parametrize("seed", [0, 1])
def test_server_rate_fedadam_equals_fedadam_and_a_float64_reference(seed):
    rng = np.random.default_rng(seed)
    eta = float(rng.uniform(0.01, 1.0))
    start = rng.normal(size=(7,)).astype(np.float32)
    rounds = [(rng.normal(size=(4, 7)).astype(np.float32),
               rng.integers(1, 20, size=4).astype(np.float32), rng.random(4) < 0.8)
              for _ in range(3)]
    rounds[0][2][0] = True
    ours = fed.server_rate_aggregator("fedadam", 4, start, eta)
    theirs = rule_aggregator(aggregators.fedadam(eta=eta), 4, start)
    a, b = ours.init(jax.random.PRNGKey(0)), theirs.init(jax.random.PRNGKey(0))
    step_a, step_b = (jax.jit(lambda *args, c=c: c.call("aggregate_stacked", *args, None))
                      for c in (ours, theirs))
    pa = pb = jnp.asarray(start)
    for clients, weights, mask in rounds:
        a, (pa, _) = step_a(a, pa, clients, weights, mask)
        b, (pb, _) = step_b(b, pb, clients, weights, mask)
    np.testing.assert_allclose(pa, pb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pa, _fedadam_reference(rounds, start, eta), rtol=1e-4,
                               atol=1e-5)
    chex.assert_trees_all_close(a.inner.rule_state, b.rule_state, rtol=1e-5, atol=1e-7)
    assert float(a.learning_rate) == pytest.approx(eta)


@pytest.mark.parametrize("rule, factory", [
    ("fedavgm", lambda rate: aggregators.fedavgm(server_learning_rate=rate,
                                                 server_momentum=0.9)),
    pytest.param("fedyogi", lambda rate: aggregators.fedyogi(eta=rate),
                 marks=pytest.mark.slow)])
def test_server_rate_rules_equal_theirs_through_the_buffer(rule, factory):
    rng = np.random.default_rng(5)
    rate = 0.37
    start = rng.normal(size=(3, 2)).astype(np.float32)
    extra = {"server_momentum": 0.9} if rule == "fedavgm" else {}
    ours = fed.server_rate_aggregator(rule, 3, start, rate, **extra)
    theirs = rule_aggregator(factory(rate), 3, start)
    a, b = ours.init(jax.random.PRNGKey(0)), theirs.init(jax.random.PRNGKey(0))
    contribute = [jax.jit(lambda *args, c=c: c.call("contribute", *args)) for c in (ours, theirs)]
    aggregate = [jax.jit(lambda state, c=c: c.call("aggregate", state)) for c in (ours, theirs)]
    for _ in range(3):
        for peer in range(3):
            tensor = rng.normal(size=(3, 2)).astype(np.float32)
            weight = np.float32(rng.integers(1, 9))
            a, _ = contribute[0](a, jnp.int32(peer), tensor, weight)
            b, _ = contribute[1](b, jnp.int32(peer), tensor, weight)
        a, (pa, ta) = aggregate[0](a)
        b, (pb, tb) = aggregate[1](b)
        np.testing.assert_allclose(pa, pb, rtol=1e-5, atol=1e-6)
        assert float(ta) == float(tb)
    np.testing.assert_allclose(a.inner.global_params, b.global_params, rtol=1e-5, atol=1e-6)


# --- errors ----------------------------------------------------------------------------------

def test_bad_inputs_raise_named_errors(world):
    start = np.zeros(3, np.float32)
    with pytest.raises(ConfigError, match="rule must be one of"):
        fed.server_rate_aggregator("median", 2, start, 0.1)
    with pytest.raises(ConfigError, match="learning_rate must be > 0"):
        fed.server_rate_aggregator("fedadam", 2, start, 0.0)
    pop, members = world["pop"], world["start"]
    states = pop.member(members, 0)
    with pytest.raises(InvalidArgument, match="no slot 'optimizer' in entry 'client'"):
        fed.Place("client", "optimizer", ("x",)).read(states)
    with pytest.raises(InvalidArgument, match="no field 'momentum'.*learning_rate"):
        fed.Place("client", "model", ("opt_state", "hyperparams", "momentum")).read(states)
    with pytest.raises(InvalidArgument, match="floating-point scalar per peer"):
        fed.Place("client", "data", ("size",)).read(states)
    with pytest.raises(InvalidArgument, match="every hyperparameter"):
        pop.init(world["key"], {"client_lr": jnp.ones(3)})
    with pytest.raises(InvalidArgument, match="one number per member"):
        pop.init(world["key"], {"client_lr": jnp.ones(3), "server_lr": jnp.ones(2)})
    with pytest.raises(InvalidArgument, match="at least one hyperparameter"):
        fed.FederatedPopulation(pop.simulation, {}, world["evaluate"], 1)
    with pytest.raises(InvalidArgument, match="rounds"):
        fed.FederatedPopulation(pop.simulation, pop.hyperparameters, world["evaluate"], 0)
    other = SearchSpace({"client_lr": Float(0.01, 0.2)})
    with pytest.raises(InvalidArgument, match="search space names"):
        fed.run(pop, other, world["key"], population_size=2, generations=1)
    words = SearchSpace({"client_lr": Float(0.01, 0.2),
                         "server_lr": Categorical(("fast", "slow"))})
    with pytest.raises(InvalidArgument, match="not all numbers"):
        fed.numbers(words, {"client_lr": jnp.ones(2), "server_lr": jnp.zeros(2, jnp.int32)})


def test_cohort_schedules_bound_the_generations(world):
    compiled, population, bindings, evaluate = world["compiled"], world["population"], \
        world["bindings"], world["evaluate"]
    schedule = np.tile(np.arange(COHORT, dtype=np.int32), (3, 1))  # covers 3 rounds
    clients = bbjax.Peers(CLIENTS, init_args=population["client"].init_args, cohort=schedule)
    simulation = Simulation(compiled, {"server": bbjax.Peers(1), "client": clients}, bindings)
    pop = fed.FederatedPopulation(simulation, world["pop"].hyperparameters, evaluate, ROUNDS)
    with pytest.raises(SimulationError, match="cover 3 rounds"):
        fed.run(pop, SPACE, world["key"], population_size=2, generations=2)


def test_a_population_that_fails_entirely_raises_divergence(world):
    explosive = SearchSpace({"client_lr": Float(1e38, 1e38), "server_lr": Float(0.1, 0.1)})
    with pytest.raises(DivergenceError, match="every member of generation 0") as caught:
        fed.run(world["pop"], explosive, world["key"], population_size=P, generations=3)
    assert caught.value.round == 0
    assert np.isneginf(caught.value.history.fitness).all()


# --- from a configuration ----------------------------------------------------------------------

def _strategy(space, **training):
    """What ``federated_population_run`` reads of a ``PopulationBased`` configuration."""
    return SimpleNamespace(population_size=4, generations=3, exploit=Truncation(0.25),
                           explore=Perturbation(0.2), search_space=space,
                           training=Training(**training),
                           to_json=lambda: {"type": "PopulationBased"})


def test_federated_population_run_rejects_what_it_cannot_run():
    local = SearchSpace({"learning_rate": Float(0.01, 0.1)})
    with pytest.raises(ConfigError, match="client_learning_rate") as caught:
        fed.federated_population_run(_strategy(local), num_clients=4, clients_per_round=2,
                                     rounds=1)
    assert caught.value.field == "search_space"
    with pytest.raises(ConfigError, match="at most num_clients") as caught:
        fed.federated_population_run(_strategy(SPACE_JSON), num_clients=4,
                                     clients_per_round=5, rounds=1)
    assert caught.value.field == "clients_per_round"
    with pytest.raises(ConfigError, match="rounds must be an integer >= 1"):
        fed.federated_population_run(_strategy(SPACE_JSON), num_clients=4,
                                     clients_per_round=2, rounds=0)


@pytest.mark.slow
def test_federated_population_run_trains_fedadam_members():
    built = fed.federated_population_run(
        _strategy(SPACE_JSON, max_client_size=60, local_steps=2, batch_size=5),
        num_clients=8, clients_per_round=4, rounds=2)
    with pytest.raises(ConfigError, match="one device"):
        built.run(devices=2)
    history = built.run()
    assert history.config["federated"]["rule"] == "fedadam"
    assert sorted(history.hyperparameters) == sorted(SPACE_JSON.names)
    assert np.isfinite(history.fitness).all()
    assert history["best_fitness"][-1] > history["best_fitness"][0]
    assert history["accuracy"][-1] > 0.5
