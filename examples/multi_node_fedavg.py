"""FedAvg across one server node and several client nodes, exchanging only envelope bytes.

Every node is a sans-IO ``Node``; this script plays the network: it ships each
``Outbound`` envelope to its peer, and on one unreliable client it drops or duplicates
envelopes at random. Duplicates are rejected by the receiving node; when a client's update
is lost, the server closes the round with the updates that arrived (the others are masked
out). Each client trains on its own label-skewed shard of the Synthetic(1, 1) data.
``--rule median`` (or ``trimmed_mean``, ``krum``) makes the server aggregate with that
robust rule from ``bbjax.aggregators`` instead of the mean.

    python examples/multi_node_fedavg.py [--rule median]
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import bbjax
from bbjax.models import MLP, cross_entropy
from bbjax.modules import FedAvgRound
from bbjax.runtime import AppOutput, NodeConfig, Outbound, Rejected

SERVER, CLIENTS, FLAKY = 0, (1, 2, 3, 4), 3


def build_network(local_steps: int, module: bbjax.Module | None = None):
    """The server and client nodes, compiled from ``module`` (default: FedAvgRound)."""
    data = bbjax.data.synthetic(1.0, 1.0, num_clients=len(CLIENTS), seed=1, max_size=800)
    model = bbjax.components.flax_model(MLP(60, 64, 10, rngs=nnx.Rngs(0)), optax.sgd(0.1),
                                        cross_entropy)
    shards = {p: data.client(i) for i, p in enumerate(CLIENTS)}
    sources = {p: bbjax.components.array_data_source(*shards[p], batch_size=32) for p in CLIENTS}
    compiled = (bbjax.Compiler().bind("model", model).bind("data", sources[CLIENTS[0]])
                .compile(module or FedAvgRound(local_steps)))
    server = bbjax.install(SERVER, compiled, ["fedavg", "fedavg_server"],
                     {"model": model, "data": sources[CLIENTS[0]]},
                     NodeConfig(peers={"client": CLIENTS, "server": [SERVER]}))
    clients = {p: bbjax.install(p, compiled, ["fedavg_client"], {"model": model, "data": sources[p]},
                          NodeConfig(peers={"server": [SERVER]})) for p in CLIENTS}
    test_x = np.concatenate([shards[p][0] for p in CLIENTS])
    test_y = np.concatenate([shards[p][1] for p in CLIENTS])
    return model, server, clients, (test_x, test_y)


def flaky_network(rng):
    """How many copies of an envelope arrive: the flaky client's are dropped or duplicated."""
    return lambda sender: int(rng.choice([0, 1, 2], p=[0.3, 0.4, 0.3])) if sender == FLAKY else 1


def ship(steps, nodes, copies, sender: int, log: dict) -> None:
    """Deliver each outbound envelope ``copies(sender)`` times; count what was rejected."""
    for step in steps:
        if isinstance(step, Rejected):
            log[step.kind] = log.get(step.kind, 0) + 1
        elif isinstance(step, Outbound):
            n = copies(sender)
            log[f"delivered x{n}"] = log.get(f"delivered x{n}", 0) + 1
            for _ in range(n):
                nodes[step.peer].deliver(step.data)


def run_round(server, clients, copies, log) -> dict:
    """One round: the server starts it, clients answer, the server averages what arrived."""
    nodes = {SERVER: server, **clients}
    server.start()
    ship(server.poll(), nodes, copies, SERVER, log)
    for peer, node in clients.items():
        ship(node.poll(), nodes, copies, peer, log)
    steps = server.poll()
    if not any(isinstance(s, AppOutput) for s in steps):  # an update was lost:
        server.close("update")                              # close with what arrived
        steps += server.poll()
    ship(steps, nodes, copies, SERVER, log)
    return {s.name: np.asarray(s.value) for s in steps if isinstance(s, AppOutput)}


RULES = {"median": lambda: bbjax.aggregators.median(),
         "trimmed_mean": lambda: bbjax.aggregators.trimmed_mean(0.25),
         "krum": lambda: bbjax.aggregators.krum(0)}


def main(rounds: int = 12, local_steps: int = 10, seed: int = 0,
         rule: str | None = None) -> list[float]:
    module = FedAvgRound(local_steps, rule=RULES[rule](), num_clients=len(CLIENTS)) if rule \
        else None
    model, server, clients, (x, y) = build_network(local_steps, module)
    copies = flaky_network(np.random.default_rng(seed))
    log: dict = {}
    accuracies = []
    for r in range(rounds):
        out = run_round(server, clients, copies, log)
        logits = model.call("forward", server.states["model"], jnp.asarray(x))[1]
        accuracies.append(float(jnp.mean(jnp.argmax(logits, -1) == y)))
        print(f"round {r:2d}  participants {int(out['participants'])}/{len(CLIENTS)}  "
              f"train loss {float(out['train_loss']):.3f}  accuracy {accuracies[-1]:.3f}")
    print("network:", dict(sorted(log.items())))
    return accuracies


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", choices=sorted(RULES), default=None)
    main(rule=parser.parse_args().rule)
