"""Inlined partitions on the JAX side: a step passes the slots' state leaves in and takes the
new ones out, runs no component method for them, and Nodes and simulate compute what the
opaque slot calls compute."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from flax import nnx

import bbjax
from bbjax.components import Component, flax_model
from bbjax.errors import StepError
from bbjax.modules import FedAvgRound
from bbjax.runtime import NodeConfig
from bbjax.compiler.step import PartitionStep
from bbjax.simulation import Peers, simulate
from bbjax.models import LogisticRegression, cross_entropy
from tests.cycling_source import cycling_source
from tests.hosting import run_round

CALLS: list[str] = []
TRAINED = flax_model(LogisticRegression(6, 3, rngs=nnx.Rngs(0)), optax.sgd(0.3), cross_entropy)


def _counted(component: Component) -> Component:
    """``component`` whose methods note each Python-level call (i.e. each trace)."""
    def wrap(name, fn):
        def method(state, *inputs):
            CALLS.append(name)
            return fn(state, *inputs)
        return method
    return Component(component.role, component.init,
                     {n: wrap(n, f) for n, f in component.methods.items()}, component.name,
                     component.config)


MODEL = _counted(TRAINED)
RNG = np.random.default_rng(1)
SHARDS = {p: (RNG.normal(size=(16, 6)).astype(np.float32),
              RNG.integers(0, 3, size=16).astype(np.int32)) for p in (1, 2)}
SOURCES = {p: cycling_source(*SHARDS[p], batch_size=8) for p in (1, 2)}


def _compile(inline: bool):
    return (bbjax.Compiler(inline=inline).bind("model", MODEL).bind("data", SOURCES[1])
            .compile(FedAvgRound(local_steps=2)))


@pytest.fixture(scope="module")
def inlined():
    return _compile(True)


@pytest.fixture(scope="module")
def opaque():
    return _compile(False)


def _nodes(compiled):
    server = bbjax.install(0, compiled, ["fedavg", "fedavg_server"],
                           {"model": MODEL, "data": SOURCES[1]},
                           NodeConfig(peers={"client": [1, 2], "server": [0]}))
    clients = {p: bbjax.install(p, compiled, ["fedavg_client"],
                                {"model": MODEL, "data": SOURCES[p]},
                                NodeConfig(peers={"server": [0]})) for p in (1, 2)}
    return server, clients


def _rounds(compiled, rounds=2):
    server, clients = _nodes(compiled)
    outputs = [run_round(server, {0: server, **clients}) for _ in range(rounds)]
    return server, clients, outputs


@pytest.fixture(scope="module")
def reference(opaque):
    """Two rounds computed by the components themselves (opaque slot calls), and the
    component methods they traced."""
    CALLS.clear()
    return (*_rounds(opaque), sorted(set(CALLS)))


def test_node_rounds_compute_what_the_components_compute_and_call_none(inlined, reference):
    CALLS.clear()
    server, clients, outputs = _rounds(inlined)
    assert CALLS == []  # the inlined partitions ran no component method
    want_server, want_clients, want_outputs, traced = reference
    assert traced == ["load_parameters", "params", "train"]  # the model's, counted
    for got, want in zip(outputs, want_outputs):
        np.testing.assert_allclose(got["train_loss"], want["train_loss"], rtol=1e-5)
    nodes = [(server, want_server), *((clients[p], want_clients[p]) for p in clients)]
    for node, want in nodes:
        for slot in node.states:
            for a, b in zip(jax.tree.leaves(node.states[slot]), jax.tree.leaves(want.states[slot])):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_simulate_computes_what_the_components_compute(inlined, reference):
    xs = np.stack([SHARDS[p][0] for p in (1, 2)])
    ys = np.stack([SHARDS[p][1] for p in (1, 2)])
    history = simulate(inlined, {"server": 1, "client": Peers(2, init_args={"data": (xs, ys)})},
                       2, jax.random.PRNGKey(0), bindings={"model": MODEL, "data": SOURCES[1]})
    want_outputs = reference[2]
    np.testing.assert_allclose(history["train_loss"],
                               [float(o["train_loss"]) for o in want_outputs], rtol=1e-5)


def test_a_component_of_another_state_shape_is_refused_for_an_inlined_slot(inlined):
    bigger = cycling_source(np.zeros((24, 6), np.float32), np.zeros(24, np.int32), 8)
    with pytest.raises(StepError, match="state leaf 'state.data.x'"):
        PartitionStep(inlined, "fedavg_client", {"model": MODEL, "data": bigger})
