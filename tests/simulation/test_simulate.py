"""``bbjax.simulate``: routing, cohorts, dropout, exchange within a class, and agreement with
installed Nodes exchanging envelopes."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import bbjax
from bbjax.components import Component, Role, flax_model, padded_data_source
from bbjax.dsl import Graph, Module
from bbjax.modules import FedAvgRound
from bbjax.runtime.install import install
from bbjax.runtime.node import NodeConfig
from bbjax.simulation import Peers, Simulation, simulate
from bbjax.errors import SimulationError
from bbjax.models import LogisticRegression, cross_entropy
from tests.hosting import run_round

SERVER, CLIENTS = 0, (1, 2, 3, 4)


@pytest.fixture(scope="module")
def fedavg():
    """A FedAvg round over 4 clients of different sizes (7, 12, 20, 30 examples)."""
    rng = np.random.default_rng(0)
    sizes = [7, 12, 20, 30]
    xs = [rng.normal(size=(n, 6)).astype(np.float32) for n in sizes]
    ys = [rng.integers(0, 3, n).astype(np.int32) for n in sizes]
    data = bbjax.data.FederatedData.from_clients(xs, ys)
    model = flax_model(LogisticRegression(6, 3, rngs=nnx.Rngs(0)), optax.sgd(0.3), cross_entropy)
    source = padded_data_source(data.x[0], data.y[0], int(data.sizes[0]), batch_size=5)
    compiled = bbjax.Compiler().bind("model", model).bind("data", source).compile(
        FedAvgRound(local_steps=3))
    return compiled, model, source, data


def _client_peers(data, **kw):
    return Peers(data.num_clients, init_args={"data": (data.x, data.y, data.sizes)}, **kw)


def test_simulate_matches_installed_nodes_exchanging_envelopes(fedavg):
    compiled, model, source, data = fedavg
    sources = [padded_data_source(data.x[i], data.y[i], int(data.sizes[i]), batch_size=5)
               for i in range(data.num_clients)]
    server = install(SERVER, compiled, ["fedavg", "fedavg_server"],
                     {"model": model, "data": source},
                     NodeConfig(peers={"client": CLIENTS, "server": [SERVER]}))
    clients = {p: install(p, compiled, ["fedavg_client"], {"model": model, "data": sources[i]},
                          NodeConfig(peers={"server": [SERVER]}), key=jax.random.PRNGKey(10 + p))
               for i, p in enumerate(CLIENTS)}
    stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)  # noqa: E731
    start = {"server": {"model": stack([server.states["model"]])},
             "client": {slot: stack([clients[p].states[slot] for p in CLIENTS])
                        for slot in ("data", "model")}}
    rounds = 3
    history = simulate(compiled, {"server": 1, "client": _client_peers(data)}, rounds,
                       jax.random.PRNGKey(0), bindings={"model": model, "data": source},
                       initial_states=start)
    nodes = {SERVER: server, **clients}
    losses = [float(run_round(server, nodes)["train_loss"]) for _ in range(rounds)]
    want = model.call("params", server.states["model"])[1]
    got = model.call("params", jax.tree.map(lambda a: a[0], history.states["server"]["model"]))[1]
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history["train_loss"], losses, rtol=1e-5)
    np.testing.assert_array_equal(history["participants"], [4, 4, 4])
    for i, p in enumerate(CLIENTS):  # every client's own model and data position agree too
        chex.assert_trees_all_close(
            jax.tree.map(lambda a: a[i], history.states["client"]["model"].params),
            clients[p].states["model"].params, rtol=1e-5, atol=1e-6)
        assert int(history.states["client"]["data"].position[i]) == int(
            clients[p].states["data"].position)


def test_fedavg_round_is_the_size_weighted_mean_of_the_local_models(fedavg):
    compiled, model, source, data = fedavg
    bindings = {"model": model, "data": source}
    sim = Simulation(compiled, {"server": 1, "client": _client_peers(data)}, bindings)
    states = sim.init(jax.random.PRNGKey(1))
    new, metrics = jax.jit(sim.round)(states, jax.random.PRNGKey(2))
    local = np.concatenate([np.asarray(new["client"]["model"].params["out"]["kernel"])
                            .reshape(4, -1)], 0).astype(np.float64)
    weights = np.asarray(data.sizes, np.float64)
    want = weights @ local / weights.sum()
    got = np.asarray(new["server"]["model"].params["out"]["kernel"]).reshape(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    params = 6 * 3 + 3
    # global params to 4 clients, then (params, loss, count) from 4 clients
    assert float(metrics["bytes_sent"]) == 4 * params * 4 + 4 * (params * 4 + 4 + 4)


def test_only_the_sampled_cohort_trains_and_the_rest_keep_their_state(fedavg):
    compiled, model, source, data = fedavg
    sim = Simulation(compiled, {"server": 1, "client": _client_peers(data, cohort=2)},
                     {"model": model, "data": source})
    states = sim.init(jax.random.PRNGKey(0))
    before = np.asarray(states["client"]["data"].position)
    new, metrics = jax.jit(sim.round)(states, jax.random.PRNGKey(5))
    moved = np.asarray(new["client"]["data"].position) != before
    assert moved.sum() == 2 and int(metrics["participants"]) == 2
    kernels = np.asarray(new["client"]["model"].params["out"]["kernel"]).reshape(4, -1)
    untouched = np.asarray(states["client"]["model"].params["out"]["kernel"]).reshape(4, -1)
    np.testing.assert_array_equal(kernels[~moved], untouched[~moved])
    weights = np.asarray(data.sizes, np.float64) * moved
    want = weights @ kernels.astype(np.float64) / weights.sum()
    np.testing.assert_allclose(
        np.asarray(new["server"]["model"].params["out"]["kernel"]).reshape(-1), want,
        rtol=1e-5, atol=1e-6)


def test_cohorts_differ_between_rounds_and_are_fixed_by_the_key(fedavg):
    compiled, model, source, data = fedavg
    population = {"server": 1, "client": _client_peers(data, cohort=1)}
    run = lambda key: simulate(compiled, population, 12, key,  # noqa: E731
                               bindings={"model": model, "data": source})
    a, b = run(jax.random.PRNGKey(3)), run(jax.random.PRNGKey(3))
    np.testing.assert_array_equal(a["train_loss"], b["train_loss"])
    assert len(set(np.round(a["train_loss"], 5))) > 1


def test_dropped_messages_are_masked_out(fedavg):
    compiled, model, source, data = fedavg
    history = simulate(compiled, {"server": 1, "client": _client_peers(data, dropout=0.5)},
                       40, jax.random.PRNGKey(0), bindings={"model": model, "data": source})
    participants = history["participants"]
    assert participants.min() >= 0 and participants.max() <= 4
    assert 1.2 < participants.mean() < 2.8  # 4 * 0.5 = 2 expected; sd of the mean ~0.16


def test_rounds_per_call_does_not_change_the_results(fedavg):
    compiled, model, source, data = fedavg
    population = {"server": 1, "client": _client_peers(data, cohort=3)}
    kw = dict(bindings={"model": model, "data": source})
    whole = simulate(compiled, population, 5, jax.random.PRNGKey(4), **kw)
    pieces = simulate(compiled, population, 5, jax.random.PRNGKey(4), rounds_per_call=2, **kw)
    for name in whole.metrics:
        np.testing.assert_allclose(whole[name], pieces[name], rtol=1e-6)


def test_evaluation_every_k_rounds_and_on_the_last(fedavg):
    compiled, model, source, data = fedavg

    def evaluate(states):
        return {"norm": jnp.sum(states["server"]["model"].params["out"]["kernel"] ** 2)}

    history = simulate(compiled, {"server": 1, "client": _client_peers(data)}, 7,
                       jax.random.PRNGKey(0), bindings={"model": model, "data": source},
                       evaluate=evaluate, eval_every=3)
    measured = ~np.isnan(history["norm"])
    np.testing.assert_array_equal(np.flatnonzero(measured), [2, 5, 6])
    final = np.sum(np.asarray(history.states["server"]["model"].params["out"]["kernel"]) ** 2)
    np.testing.assert_allclose(history["norm"][6], final, rtol=1e-6)


# -- a class exchanging with itself ------------------------------------------------------

def _holder() -> Component:
    """A Protocol holding one vector per peer."""
    return Component(Role.PROTOCOL, lambda key, v=jnp.zeros(3): {"v": v},
                     {"value": lambda s: (s, s["v"]), "set": lambda s, v: ({"v": v}, ())},
                     "holder")


class Gossip(Module):
    """Every node sends its vector to every node and keeps the mean of what arrived."""

    name = "gossip"

    def body(self, g: Graph) -> None:
        nodes = g.peers("node")
        tick = g.send("tick", jnp.zeros((), jnp.float32), to=nodes)
        value = g.slot("state").value(after=tick)
        stacked, arrived = g.gather("value", value, to=nodes, senders=nodes)
        w = arrived.astype(jnp.float32)
        g.slot("state").set(jnp.tensordot(w, stacked, 1) / jnp.maximum(w.sum(), 1))
        g.output("heard", w.sum())


def test_a_class_gathering_from_itself_exchanges_within_the_round():
    holder = _holder()
    compiled = bbjax.Compiler().bind("state", holder).compile(Gossip())
    values = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    population = {"self": 1, "node": Peers(6, init_args={"state": (values,)}, cohort=4)}
    sim = Simulation(compiled, population, {"state": holder})
    states = sim.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(sim.round)(states, jax.random.PRNGKey(7))
    out = np.asarray(new["node"]["state"]["v"])
    ran = np.any(out != values, axis=1)
    assert ran.sum() == 4 and float(metrics["heard"]) == 4
    np.testing.assert_allclose(out[ran], np.broadcast_to(values[ran].mean(0), (4, 3)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[~ran], values[~ran])


# -- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("population, message", [
    ({"client": 3}, "no peers play class"),
    ({"server": 1, "client": 3, "robot": 2}, "does not have"),
    ({}, "population must map"),
    ({"server": Peers(1, hosts=("client",)), "client": 3}, "played by both"),
])
def test_population_errors(fedavg, population, message):
    compiled, model, source, _ = fedavg
    with pytest.raises(SimulationError, match=message):
        Simulation(compiled, population, {"model": model, "data": source})


@pytest.mark.parametrize("kwargs, message", [
    (dict(count=0), "count must be a positive int"),
    (dict(count=3, cohort=4), r"cohort must be an int in \[1, 3\]"),
    (dict(count=3, dropout=1.0), r"dropout must be in \[0, 1\)"),
    (dict(count=3, init_args={"data": (np.zeros((2, 4)),)}), "leading axis of 3"),
])
def test_peers_errors(kwargs, message):
    with pytest.raises(SimulationError, match=message):
        Peers(**kwargs)


def test_unknown_init_args_slot_and_missing_binding(fedavg):
    compiled, model, source, data = fedavg
    bad = Peers(4, init_args={"modle": (np.zeros((4, 1)),)})
    with pytest.raises(SimulationError, match="names slots \\['modle'\\]"):
        Simulation(compiled, {"server": 1, "client": bad}, {"model": model, "data": source})
    with pytest.raises(SimulationError, match=r"unbound slots \['data'\]: give it a component"):
        Simulation(compiled, {"server": 1, "client": 4}, {"model": model})


def test_single_messages_from_many_peers_need_a_gather():
    class Shout(Module):
        name = "shout"

        def body(self, g: Graph) -> None:
            many, one = g.peers("many"), g.peers("one")
            tick = g.send("tick", jnp.zeros((), jnp.float32), to=many)
            heard = g.send("shout", g.slot("state").value(after=tick), to=one)
            g.slot("state").set(heard)

    holder = _holder()
    compiled = bbjax.Compiler().bind("state", holder).compile(Shout())
    with pytest.raises(SimulationError, match="need g.gather"):
        Simulation(compiled, {"self": 1, "many": 3, "one": 1}, {"state": holder})


def test_a_class_sending_itself_single_messages_is_refused():
    class Echo(Module):
        name = "echo"

        def body(self, g: Graph) -> None:
            nodes = g.peers("node")
            tick = g.send("tick", jnp.zeros((), jnp.float32), to=nodes)
            heard = g.send("echo", g.slot("state").value(after=tick), to=nodes)
            g.slot("state").set(heard)

    holder = _holder()
    compiled = bbjax.Compiler().bind("state", holder).compile(Echo())
    with pytest.raises(SimulationError, match="a class exchanging with itself needs g.gather"):
        Simulation(compiled, {"self": 1, "node": 3}, {"state": holder})


def test_missing_graph_input_is_named():
    class Needs(Module):
        name = "needs"

        def body(self, g: Graph) -> None:
            x = g.input("x", jax.ShapeDtypeStruct((3,), jnp.float32))
            g.slot("state").set(x)

    holder = _holder()
    compiled = bbjax.Compiler().bind("state", holder).compile(Needs())
    with pytest.raises(SimulationError, match="needs input 'x'"):
        Simulation(compiled, {"self": 2}, {"state": holder})
    sim = Simulation(compiled, {"self": Peers(2, inputs={"x": np.ones((2, 3), np.float32)})},
                     {"state": holder})
    new, _ = jax.jit(sim.round)(sim.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    np.testing.assert_array_equal(new["self"]["state"]["v"], np.ones((2, 3)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(rounds=0), "rounds must be an integer >= 1"),
    (dict(eval_every=0), "eval_every must be an integer >= 1"),
    (dict(rounds_per_call=0), "rounds_per_call must be an integer >= 1"),
    (dict(devices=0), "devices must be in"),
    (dict(initial_states={"server": {}}), "initial_states has structure"),
])
def test_simulate_argument_errors(fedavg, kwargs, message):
    compiled, model, source, data = fedavg
    args = dict(rounds=2) | kwargs
    rounds = args.pop("rounds")
    with pytest.raises(SimulationError, match=message):
        simulate(compiled, {"server": 1, "client": _client_peers(data)}, rounds,
                 jax.random.PRNGKey(0), bindings={"model": model, "data": source}, **args)


def test_initial_states_with_a_wrong_shape_are_named(fedavg):
    compiled, model, source, data = fedavg
    population = {"server": 1, "client": _client_peers(data)}
    states = Simulation(compiled, population, {"model": model, "data": source}).init(
        jax.random.PRNGKey(0))
    states["client"]["data"] = states["client"]["data"].replace(size=jnp.zeros(3, jnp.int32))
    with pytest.raises(SimulationError, match=r"\.size is int32\[3\], expected int32\[4\]"):
        simulate(compiled, population, 1, jax.random.PRNGKey(0),
                 bindings={"model": model, "data": source}, initial_states=states)


# -- algorithm-library rules bound as the server's Aggregator ------------------------------

@pytest.mark.parametrize("make_rule", [
    lambda: bbjax.aggregators.fedadam(eta=0.05),
    lambda: bbjax.aggregators.fedavgm(server_momentum=0.9),
    lambda: bbjax.aggregators.median(),
], ids=["fedadam", "fedavgm", "median"])
def test_a_bound_rule_aggregator_applies_the_rule_with_its_state_over_rounds(fedavg, make_rule):
    from bbjax.components import rule_aggregator
    _, model, source, data = fedavg
    rule = make_rule()
    initial = model.init(jax.random.PRNGKey(0)).params
    aggregator = rule_aggregator(rule, capacity=4, initial_params=initial)
    compiled = (bbjax.Compiler().bind("model", model).bind("data", source)
                .bind("aggregator", aggregator)
                .compile(FedAvgRound(local_steps=2, num_clients=4, aggregator=True)))
    sim = Simulation(compiled, {"server": 1, "client": _client_peers(data)},
                     {"model": model, "data": source, "aggregator": aggregator})
    states = sim.init(jax.random.PRNGKey(0))
    round_fn = jax.jit(sim.round)
    rule_state, want = rule.init(initial), initial
    weights = jnp.asarray(data.sizes, jnp.float32)
    for r in range(3):
        states, _ = round_fn(states, jax.random.PRNGKey(r))
        local = states["client"]["model"].params
        want, rule_state = rule.aggregate(rule_state, want, local, weights, jnp.ones(4, bool))
        got = jax.tree.map(lambda a: a[0], states["server"]["model"].params)
        chex.assert_trees_all_close(got, want, rtol=2e-5, atol=1e-6)


def test_fedprox_client_model_keeps_clients_near_the_global_model(fedavg):
    _, _, source, data = fedavg
    drift = {}
    for mu in (0.0, 50.0):
        model = bbjax.components.fedprox_model(LogisticRegression(6, 3, rngs=nnx.Rngs(0)),
                                               optax.sgd(0.01), cross_entropy, proximal_mu=mu)
        compiled = bbjax.Compiler().bind("model", model).bind("data", source).compile(
            FedAvgRound(local_steps=8))
        history = simulate(compiled, {"server": 1, "client": _client_peers(data)}, 1,
                           jax.random.PRNGKey(0), bindings={"model": model, "data": source})
        start = model.init(jax.random.PRNGKey(0)).params["out"]["kernel"]  # round's global
        local = history.states["client"]["model"].params["out"]["kernel"]
        drift[mu] = float(jnp.mean(jnp.linalg.norm((local - start).reshape(4, -1), axis=1)))
    assert drift[50.0] < 0.5 * drift[0.0]


def test_scaffold_round_moves_global_and_control_variates_by_the_paper(fedavg):
    from bbjax.components import rule_aggregator, scaffold_model
    from bbjax.modules import ScaffoldRound
    _, _, source, data = fedavg
    lr, steps = 0.2, 3
    model = scaffold_model(LogisticRegression(6, 3, rngs=nnx.Rngs(0)), lr, cross_entropy)
    initial = model.init(jax.random.PRNGKey(0)).params
    aggregator = rule_aggregator(bbjax.aggregators.scaffold(num_clients=4), 4, initial)
    bindings = {"model": model, "data": source, "aggregator": aggregator}
    compiled = (bbjax.Compiler().bind("model", model).bind("data", source)
                .bind("aggregator", aggregator).compile(ScaffoldRound(steps, num_clients=4)))
    sim = Simulation(compiled, {"server": 1, "client": _client_peers(data)}, bindings)
    round_fn = jax.jit(sim.round)
    states = sim.init(jax.random.PRNGKey(0))
    flat = lambda tree: np.concatenate([np.ravel(a) for a in jax.tree.leaves(tree)])  # noqa
    x_g = flat(initial)
    c_i, c = np.zeros((4, x_g.size)), np.zeros(x_g.size)
    for r in range(2):
        states, _ = round_fn(states, jax.random.PRNGKey(r))
        client = states["client"]["model"]
        y = np.stack([flat(jax.tree.map(lambda a: a[i], client.params)) for i in range(4)])
        np.testing.assert_allclose(  # clients trained from the global model they were sent
            np.stack([flat(jax.tree.map(lambda a: a[i], client.opt_state[0].anchor))
                      for i in range(4)]), np.broadcast_to(x_g, y.shape), rtol=1e-6)
        np.testing.assert_allclose(  # ... with the server's control they were sent
            np.stack([flat(jax.tree.map(lambda a: a[i], client.opt_state[0].server_control))
                      for i in range(4)]), np.broadcast_to(c, y.shape), rtol=1e-5, atol=1e-7)
        new_c_i = c_i - c + (x_g - y) / (steps * lr)
        p = np.asarray(data.sizes, np.float64) / np.sum(data.sizes)
        x_g = x_g + p @ (y - x_g)
        c = c + (new_c_i - c_i).sum(0) / 4
        c_i = new_c_i
        got_c_i = np.stack([flat(jax.tree.map(lambda a: a[i], client.opt_state[0].client_control))
                            for i in range(4)])
        np.testing.assert_allclose(got_c_i, c_i, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(flat(states["server"]["aggregator"].rule_state.control), c,
                                   rtol=1e-4, atol=1e-5)
        server = jax.tree.map(lambda a: a[0], states["server"]["model"].params)
        np.testing.assert_allclose(flat(server), x_g, rtol=1e-5, atol=1e-6)
