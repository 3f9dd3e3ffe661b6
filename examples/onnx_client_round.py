"""FedAvg with one client that runs on onnxruntime, without JAX.

``FedAvgRound`` is compiled with its slots inlined (the default), so the client partition is
one ONNX program: the model's training steps and the data source's batches (its threefry
shuffling included). ``bbjax export-client`` writes it as ``client.onnx``; a
``bbjax.onnxclient.OnnxClient`` runs it and talks to a JAX server over envelope bytes, next
to two JAX client Nodes. The same rounds with three JAX clients give the same global model
(float32 rounding apart).

    python examples/onnx_client_round.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

import bbjax
from bbjax import cli
from bbjax.compiler.export_client import client_state
from bbjax.models import LogisticRegression, cross_entropy
from bbjax.modules import FedAvgRound
from bbjax.onnxclient import OnnxClient

SERVER, CLIENTS, ONNX_CLIENT = 0, (1, 2, 3), 3


def shard(peer: int, n: int = 64) -> tuple[np.ndarray, np.ndarray, int]:
    """Peer ``peer``'s rows, padded to ``n``, and how many are real."""
    rng = np.random.default_rng(peer)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = np.argmax(x @ np.random.default_rng(0).normal(size=(8, 3)), axis=1).astype(np.int32)
    return x, y, n - 8 * peer


def deliver_all(server, peers: dict) -> dict[str, float]:
    """One round: every Outbound goes to its peer (Node or OnnxClient) until none is left."""
    everyone, outputs = {SERVER: server, **peers}, {}
    server.start()
    pending = [server]
    while pending:
        for event in pending.pop(0).poll():
            if hasattr(event, "data"):  # an Outbound, from a Node or an OnnxClient
                everyone[event.peer].deliver(event.data)
                pending.append(everyone[event.peer])
            elif hasattr(event, "value"):  # an AppOutput
                outputs[event.name] = float(np.asarray(event.value))
    return outputs


def main(rounds: int = 5, workdir: str | None = None) -> tuple[list[float], float]:
    """The server's train loss per round with the onnxruntime client, and the largest
    difference between its global model and the one three JAX clients give."""
    model = bbjax.components.flax_model(LogisticRegression(8, 3, rngs=nnx.Rngs(0)), optax.sgd(0.5),
                                        cross_entropy)
    sources = {p: bbjax.components.padded_data_source(*shard(p), batch_size=16)
               for p in CLIENTS}
    compiled = (bbjax.Compiler().bind("model", model).bind("data", sources[1])
                .compile(FedAvgRound(local_steps=4)))

    def network():
        server = bbjax.install(SERVER, compiled, ["fedavg", "fedavg_server"],
                               {"model": model, "data": sources[1]},
                               bbjax.NodeConfig(peers={"client": list(CLIENTS),
                                                       "server": [SERVER]}))
        clients = {p: bbjax.install(p, compiled, ["fedavg_client"],
                                    {"model": model, "data": sources[p]},
                                    bbjax.NodeConfig(peers={"server": [SERVER]}))
                   for p in CLIENTS}
        return server, clients

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(workdir or tmp)
        compiled.save(folder / "fedavg.onnx")
        cli.main(["export-client", str(folder / "fedavg.onnx"), "--target", "client",
                  "-o", str(folder / "client.onnx")])
        server, clients = network()
        jax_twin = clients.pop(ONNX_CLIENT)  # the onnx client starts from the state it has
        state = client_state(jax_twin.states)
        onnx_client = OnnxClient(folder / "client.onnx", peer=ONNX_CLIENT,
                                 peers={"server": [SERVER]}, state=state)
        losses = []
        for r in range(rounds):
            out = deliver_all(server, {**clients, ONNX_CLIENT: onnx_client})
            losses.append(out["train_loss"])
            print(f"round {r}: {int(out['participants'])} clients (one on onnxruntime), "
                  f"train loss {out['train_loss']:.4f}")
    mixed = jax.tree.leaves(server.states["model"].params)

    server, clients = network()
    for _ in range(rounds):
        deliver_all(server, clients)
    reference = jax.tree.leaves(server.states["model"].params)
    difference = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                     for a, b in zip(mixed, reference))
    print(f"max |global model difference| against three JAX clients: {difference:.2e}")
    return losses, difference


if __name__ == "__main__":
    main()
