"""Routing by peer index: broadcasts, gathers to many receivers and exchanges within a class
over neighbour ids, checked against numpy, and a round whose memory grows linearly with the
number of peers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bbjax
from bbjax.components import Component, Role, fixed_view_selector
from bbjax.dsl import Graph, Module
from bbjax.errors import SimulationError
from bbjax.simulation import Peers, Simulation


def holder(dim: int = 3) -> Component:
    """A Protocol holding one vector per peer."""
    return Component(Role.PROTOCOL, lambda key, v=jnp.zeros(dim): {"v": v},
                     {"value": lambda s: (s, s["v"]), "set": lambda s, v: ({"v": v}, ())},
                     "holder")


class Relay(Module):
    """The server sends its vector to every node; each node returns it plus its own; the
    server keeps the mean of what arrived."""

    name = "relay"

    def body(self, g: Graph) -> None:
        nodes, server = g.peers("node"), g.peers("server")
        down = g.send("down", g.slot("state").value(), to=nodes)
        mine = g.slot("state").value(after=down)
        stacked, arrived = g.gather("up", mine + down, to=server, senders=nodes)
        w = arrived.astype(jnp.float32)
        g.slot("state").set(jnp.tensordot(w, stacked, 1) / jnp.maximum(w.sum(), 1))
        g.output("heard", w.sum())


class Scatter(Module):
    """Every source sends its vector to the sinks its selector names; each sink keeps the
    sum of what arrived."""

    name = "scatter"

    def body(self, g: Graph) -> None:
        sources = g.peers("source")
        tick = g.send("tick", jnp.zeros((), jnp.float32), to=sources)
        targets = g.slot("targets", peer_class="sink").current_view(after=tick)
        value = g.slot("state").value(after=tick)
        stacked, arrived = g.gather("value", value, to=targets, senders=sources)
        w = arrived.astype(jnp.float32)
        g.slot("sink_state").set(jnp.tensordot(w, stacked, 1))
        g.output("heard", w.sum())


class Gossip(Module):
    """Every node sends its vector to the nodes it sees and keeps the mean of what arrived."""

    name = "gossip"

    def body(self, g: Graph) -> None:
        nodes = g.peers("node")
        tick = g.send("tick", jnp.zeros((), jnp.float32), to=nodes)
        value = g.slot("state").value(after=tick)
        stacked, arrived = g.gather("value", value, to=nodes, senders=nodes)
        w = arrived.astype(jnp.float32)
        g.slot("state").set(jnp.tensordot(w, stacked, 1) / jnp.maximum(w.sum(), 1))
        g.output("heard", w.sum())


def test_a_broadcast_and_a_gather_by_index_match_numpy():
    rng = np.random.default_rng(0)
    n = 7
    values = rng.normal(size=(n, 3)).astype(np.float32)
    start = rng.normal(size=(1, 3)).astype(np.float32)
    state = holder()
    compiled = bbjax.Compiler().bind("state", state).compile(Relay())
    schedule = np.array([[5, 1, -1, 3]])
    population = {"server": Peers(1, init_args={"state": (start,)}),
                  "node": Peers(n, init_args={"state": (values,)}, cohort=schedule)}
    sim = Simulation(compiled, population)
    new, metrics = jax.jit(sim.round)(sim.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    ran = [5, 1, 3]
    want = (values[ran].astype(np.float64) + start[0]).mean(0)
    np.testing.assert_allclose(new["server"]["state"]["v"][0], want, rtol=1e-5, atol=1e-6)
    assert float(metrics["heard"]) == 3.0
    np.testing.assert_array_equal(new["node"]["state"]["v"], values)  # nodes kept theirs


def test_a_gather_to_many_receivers_masks_exactly_who_addressed_whom():
    rng = np.random.default_rng(1)
    sources, sinks, m = 9, 5, 3
    values = rng.normal(size=(sources, 3)).astype(np.float32)
    views = np.stack([rng.choice(sinks, m, replace=False) for _ in range(sources)])
    views = views.astype(np.int32)
    state, sink_state = holder(), holder()
    targets = fixed_view_selector(np.arange(m))
    compiled = (bbjax.Compiler().bind("state", state).bind("sink_state", sink_state)
                .bind("targets", targets).compile(Scatter()))
    schedule = np.array([[8, 0, 2, 5, -1, 7], [1, 2, 3, 4, 6, -1]])
    population = {"self": 1, "sink": sinks,
                  "source": Peers(sources, init_args={"state": (values,), "targets": (views,)},
                                  cohort=schedule)}
    sim = Simulation(compiled, population)
    states = sim.init(jax.random.PRNGKey(0))
    for r in range(2):
        states, metrics = jax.jit(sim.round)(states, jax.random.PRNGKey(r), index=r)
        ran = schedule[r][schedule[r] >= 0]
        want = np.zeros((sinks, 3))
        heard = np.zeros(sinks)
        for i in ran:
            for j in views[i]:
                want[j] += values[i]
                heard[j] += 1
        np.testing.assert_allclose(states["sink"]["sink_state"]["v"], want, rtol=1e-5,
                                   atol=1e-6)
        assert float(metrics["heard"]) == pytest.approx(heard.mean())


@pytest.mark.parametrize("cohort", [None, np.array([[0, 2, 3, 5, -1], [1, 4, 5, 0, 3]])],
                         ids=["everyone", "schedule"])
def test_a_class_exchanging_with_itself_hears_only_its_neighbours(cohort):
    rng = np.random.default_rng(2)
    n, k = 6, 3
    values = rng.normal(size=(n, 3)).astype(np.float32)
    neighbours = np.stack([rng.choice([j for j in range(n) if j != i], k, replace=False)
                           for i in range(n)]).astype(np.int32)
    neighbours[2, 1] = -1  # node 2 sees only two neighbours
    state = holder()
    compiled = bbjax.Compiler().bind("state", state).compile(Gossip())
    population = {"self": 1, "node": Peers(n, init_args={"state": (values,)}, cohort=cohort,
                                           neighbours=neighbours)}
    sim = Simulation(compiled, population)
    states = sim.init(jax.random.PRNGKey(0))
    current = values.astype(np.float64)
    for r in range(2):
        states, metrics = jax.jit(sim.round)(states, jax.random.PRNGKey(r), index=r)
        ran = set(range(n)) if cohort is None else set(cohort[r][cohort[r] >= 0].tolist())
        new, heard = current.copy(), []
        for i in sorted(ran):
            senders = [j for j in neighbours[i] if j >= 0 and j in ran and i in neighbours[j]]
            heard.append(len(senders))
            if senders:
                new[i] = current[senders].mean(0)
            else:
                new[i] = 0.0
        current = new
        np.testing.assert_allclose(states["node"]["state"]["v"], current, rtol=1e-5, atol=1e-6)
        assert float(metrics["heard"]) == pytest.approx(np.mean(heard))


def test_the_round_memory_grows_linearly_with_the_peers():
    state = holder()
    compiled = bbjax.Compiler().bind("state", state).compile(Relay())

    def temp_bytes(n: int) -> int:
        sim = Simulation(compiled, {"server": 1, "node": n})
        shapes = jax.eval_shape(sim.init, jax.random.PRNGKey(0))
        analysis = jax.jit(sim.round).lower(shapes, jax.random.PRNGKey(0)).compile()
        return analysis.memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(1000), temp_bytes(8000)
    assert large < 10 * small  # linear: 8x; an n x n mask would make it 64x


@pytest.mark.parametrize("neighbours, message", [
    (np.zeros((3, 2), np.int32), r"\[4, k\]"),
    (np.zeros((4, 0), np.int32), r"\[4, k\] with k >= 1"),
    (np.zeros((4, 2), np.float32), r"int array"),
    (np.full((4, 2), 4), r"neighbours\[0, 0\] is 4"),
    (np.full((4, 2), -2), r"neighbours\[0, 0\] is -2"),
])
def test_neighbour_errors(neighbours, message):
    with pytest.raises(SimulationError, match=message):
        Peers(4, neighbours=neighbours)
