"""The Flower side of ``node_transfer.py --flower``, run by Flower's Deployment Runtime in
the Flower venv: the ServerApp sends an MLP(60, hidden, 10) of float32 weights to the one
SuperNode each round, its ClientApp takes one SGD step (batch 32, softmax cross-entropy,
jitted with JAX) and sends the model back; the ServerApp keeps it (FedAvg of one client) and
writes every round's wall time to ``out`` as JSON."""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

INPUTS, CLASSES, BATCH = 60, 10, 32


def _loss(params: list[jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    kernel1, bias1, kernel2, bias2 = params
    logits = jax.nn.relu(x @ kernel1 + bias1) @ kernel2 + bias2
    picked = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)


@jax.jit
def _step(params: list[jax.Array], x: jax.Array, y: jax.Array) -> list[jax.Array]:
    grads = jax.grad(_loss)(params, x, y)
    return [p - 0.1 * g for p, g in zip(params, grads)]


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """One SGD step from the server's parameters."""
    rng = np.random.default_rng(int(msg.content["config"]["round"]))
    x = rng.standard_normal((BATCH, INPUTS)).astype(np.float32)
    y = rng.integers(0, CLASSES, BATCH).astype(np.int32)
    params = [np.asarray(p) for p in _step(msg.content["arrays"].to_numpy_ndarrays(), x, y)]
    return Message(RecordDict({"arrays": ArrayRecord(params)}), reply_to=msg)


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    hidden, rounds = int(context.run_config["hidden"]), int(context.run_config["rounds"])
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((INPUTS, hidden)).astype(np.float32) * 0.01,
              np.zeros(hidden, np.float32),
              rng.standard_normal((hidden, CLASSES)).astype(np.float32) * 0.01,
              np.zeros(CLASSES, np.float32)]
    while not (nodes := list(grid.get_node_ids())):
        time.sleep(0.1)
    seconds = []
    for r in range(rounds):
        t0 = time.perf_counter()
        content = RecordDict({"arrays": ArrayRecord(params), "config": ConfigRecord({"round": r})})
        [reply] = grid.send_and_receive([Message(content, dst_node_id=nodes[0],
                                                 message_type="train")])
        if reply.has_error():
            raise RuntimeError(f"round {r}: {reply.error.reason}")
        params = reply.content["arrays"].to_numpy_ndarrays()
        seconds.append(time.perf_counter() - t0)
    with open(str(context.run_config["out"]), "w") as f:
        json.dump({"seconds": seconds, "model_bytes": sum(p.nbytes for p in params)}, f)
