"""Setup shared by the Node tests: the compiled rounds (built once per session), real
installed networks of nodes, and helpers to ship envelopes between them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from bbjax.compiler import Compiler
from bbjax.components import flax_model
from bbjax.modules import FedAvgRound
from bbjax.runtime.install import install
from bbjax.runtime.node import (
    AppOutput,
    Node,
    NodeConfig,
    NodeState,
    Outbound,
    Rejected,
)
from bbjax.runtime.peer_health import PeerHealth
from tests.dsl.test_module import Net, Round, ce, data_source

CLIENTS = (1, 2, 3)


@pytest.fixture(scope="session")
def net_model():
    return flax_model(Net(nnx.Rngs(0)), optax.sgd(0.1), ce)


@pytest.fixture(scope="session")
def setup(net_model):
    """``Round`` (the server sends its parameters; clients train a step and send them back,
    no gather) compiled, with its bindings."""
    bindings = {"model": net_model, "data": data_source()}
    compiled = Compiler().bind("model", net_model).bind("data", bindings["data"]).compile(Round())
    return compiled, bindings


@pytest.fixture(scope="session")
def fedavg(net_model):
    """``FedAvgRound(1)`` (clients' updates gathered on the server) compiled, with bindings."""
    data = data_source()
    compiled = Compiler().bind("model", net_model).bind("data", data).compile(FedAvgRound(1))
    return compiled, {"model": net_model, "data": data}


def round_network(setup, clients=CLIENTS) -> tuple[Node, dict[int, Node]]:
    """A ``Round`` server (peer 0) and its client nodes."""
    compiled, bindings = setup
    server = install(0, compiled, ["round", "round_server"], bindings,
                     NodeConfig(peers={"client": clients, "server": [0]}))
    return server, {p: install(p, compiled, ["round_client"], bindings,
                               NodeConfig(peers={"server": [0]})) for p in clients}


def fedavg_network(fedavg, clients=(1, 2), **config: Any) -> tuple[Node, dict[int, Node]]:
    """A ``FedAvgRound`` server (peer 0, ``config`` for its NodeConfig) and client nodes."""
    compiled, bindings = fedavg
    server = install(0, compiled, ["fedavg", "fedavg_server"], bindings,
                     NodeConfig(peers={"client": clients, "server": [0]}, **config))
    return server, {p: install(p, compiled, ["fedavg_client"], bindings,
                               NodeConfig(peers={"server": [0]})) for p in clients}


def outbound(steps: list) -> list[Outbound]:
    return [s for s in steps if isinstance(s, Outbound)]


def ship(steps: list, nodes: dict[int, Node]) -> None:
    """Deliver every Outbound of ``steps`` to its peer."""
    for step in outbound(steps):
        nodes[step.peer].deliver(step.data)


def copy_state(state: NodeState) -> NodeState:
    """A copy of ``state`` sharing only its arrays and bytes (never mutated in place)."""
    return dataclasses.replace(
        state, slots=dict(state.slots), pending={p: list(q) for p, q in state.pending.items()},
        gathered={p: dict(g) for p, g in state.gathered.items()}, inbound=list(state.inbound),
        held=list(state.held), seen=dict(state.seen), started=list(state.started),
        health=PeerHealth(dict(state.health.failures), dict(state.health.retry_at)),
        events=list(state.events))


def results(steps: list) -> list[tuple]:
    """What ``steps`` computed and sent, comparable exactly (Rejected events left out)."""
    out = []
    for step in steps:
        if isinstance(step, AppOutput):
            value = np.asarray(step.value)
            out.append((step.target, step.name, value.dtype, value.shape, value.tobytes()))
        elif not isinstance(step, Rejected):
            out.append(step)
    return out


def slot_bytes(node: Node) -> list[bytes]:
    return [np.asarray(leaf).tobytes() for leaf in jax.tree.leaves(node.states)]


@dataclass
class Case:
    """A real installed node, its state before a round, the valid envelopes of that round
    and what they make it do: ``reset`` puts the state back (no reinstall, no recompile)."""

    node: Node
    fresh: NodeState
    port: str                # the receive port the round's envelopes fill
    valid: list[bytes]       # in delivery order
    senders: list[str]       # each valid envelope's source
    reference: list[tuple]   # results(poll()) after delivering ``valid`` alone
    slots: list[bytes]       # slot_bytes after it

    def reset(self) -> Node:
        self.node.state = copy_state(self.fresh)
        return self.node

    def check_round(self, steps: list) -> None:
        """``steps`` (and the node's slots) are exactly what ``valid`` alone gives."""
        assert results(steps) == self.reference
        assert slot_bytes(self.node) == self.slots


def _case(node: Node, port: str, valid: list[bytes], senders: list[str]) -> Case:
    fresh = copy_state(node.state)
    for data in valid:
        node.deliver(data)
    steps = node.poll(now=0.0)
    assert not [s for s in steps if isinstance(s, Rejected)]
    case = Case(node, fresh, port, valid, senders, results(steps), slot_bytes(node))
    case.reset()
    return case


@pytest.fixture(scope="session")
def client_case(setup) -> Case:
    """A ``Round`` client (peer 1) and the server's envelope of one round to it."""
    server, clients = round_network(setup, clients=(1,))
    server.start()
    valid = [s.data for s in outbound(server.poll())]
    return _case(clients[1], "global", valid, ["0"])


@pytest.fixture(scope="session")
def gather_case(fedavg) -> Case:
    """A ``FedAvgRound`` server (peer 0, clients 1 and 2) after sending the global model,
    and both clients' updates, which close its gather round."""
    server, clients = fedavg_network(fedavg)
    server.start()
    ship(server.poll(), clients)
    valid = [outbound(clients[p].poll())[0].data for p in (1, 2)]
    return _case(server, "update", valid, ["1", "2"])


@pytest.fixture(scope="session")
def cases(client_case, gather_case) -> dict[str, Case]:
    return {"client_case": client_case, "gather_case": gather_case}


def mid_round_snapshots(case: Case) -> dict[str, bytes]:
    """Two snapshots of the FedAvg server of ``case`` mid-round: ``gathered`` (client 1's
    update arrived, a send to backed-off client 1 held, envelopes and an event waiting, an
    entry started) and ``pending`` (that round closed and queued, not yet run)."""
    node = case.reset()
    node.deliver(case.valid[0])
    node.poll(now=0.0)
    node.report_send_failure(1, now=0.0)
    node.start()
    node.poll(now=0.0)
    node.deliver(case.valid[1])
    node.deliver(b"not an envelope")
    node.deliver(None)
    node.start()
    gathered = node.snapshot()
    node.close("update")
    pending = node.snapshot()
    case.reset()
    return {"gathered": gathered, "pending": pending}


@pytest.fixture(scope="session")
def snapshots(gather_case) -> dict[str, bytes]:
    return mid_round_snapshots(gather_case)


@pytest.fixture(scope="session")
def bindings(fedavg) -> dict:
    """The bindings of the FedAvg nodes."""
    return fedavg[1]
