"""The Flower side of ``against_flower.py``: FedAvg in Flower's simulation runtime (Ray).

Runs in the Flower venv (``benchmarks/.flower-venv``), not the project's. The clients train
the same model on the same data as bbjax's ``FedAvgConfig`` experiment: ``local_steps`` SGD
steps on batches of their own rows, softmax cross-entropy, local training jitted with JAX.
The server samples ``clients_per_round`` clients a round, never evaluates, and averages
weighted by example counts. Prints one JSON line: the wall time of every round (from the end
of the previous round's aggregation to the end of its own; the first from its start), the
clients' summed training time per round and the versions used; writes the final parameters
to ``OUT.npz``.

    python flower_fedavg_app.py DATA.npz OUT.npz --rounds 20 --clients-per-round 10 \\
        --local-steps 20 --batch-size 10 --learning-rate 0.01

``DATA.npz`` (written by ``against_flower.py``): ``x`` [clients, max_size, features],
``y`` [clients, max_size], ``sizes`` [clients] and ``param_0 ...`` (kernel, bias of each
dense layer, ReLU between layers).
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import os
import time
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation


def _forward(params: list[jax.Array], x: jax.Array) -> jax.Array:
    layers = list(zip(params[::2], params[1::2]))
    for kernel, bias in layers[:-1]:
        x = jax.nn.relu(x @ kernel + bias)
    kernel, bias = layers[-1]
    return x @ kernel + bias


def _loss(params: list[jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    logits = _forward(params, x)
    picked = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)


@jax.jit
def _local_train(params: list[jax.Array], xs: jax.Array, ys: jax.Array, lr: jax.Array
                 ) -> tuple[list[jax.Array], jax.Array]:
    """SGD over the batches ``xs`` [steps, batch, features]; the mean pre-step loss."""
    def step(params, batch):
        loss, grads = jax.value_and_grad(_loss)(params, *batch)
        return [p - lr * g for p, g in zip(params, grads)], loss

    params, losses = jax.lax.scan(step, params, (xs, ys))
    return params, losses.mean()


@functools.cache
def _data(path: str) -> dict[str, np.ndarray]:
    """The training rows, loaded once per Ray worker."""
    with np.load(path) as data:
        return {name: data[name] for name in ("x", "y", "sizes")}


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """Local SGD from the server's parameters on this partition's rows."""
    started = time.perf_counter()
    config = msg.content["config"]
    data = _data(str(config["data"]))
    cid = int(context.node_config["partition-id"])
    size = int(data["sizes"][cid])
    steps, batch = int(config["local-steps"]), int(config["batch-size"])
    rng = np.random.default_rng([int(config["seed"]), int(config["server-round"]), cid])
    order = np.concatenate([rng.permutation(size) for _ in range(-(-steps * batch // size))])
    rows = order[:steps * batch]
    xs = data["x"][cid, rows].reshape(steps, batch, -1)
    ys = data["y"][cid, rows].reshape(steps, batch)
    params = msg.content["arrays"].to_numpy_ndarrays()
    params, loss = _local_train(params, xs, ys, jnp.float32(config["learning-rate"]))
    params = [np.asarray(p) for p in params]
    metrics = MetricRecord({"num-examples": size, "train_loss": float(loss),
                            "train-seconds": time.perf_counter() - started})
    return Message(RecordDict({"arrays": ArrayRecord(params), "metrics": metrics}),
                   reply_to=msg)


class TimedFedAvg(FedAvg):
    """FedAvg that records when each round's aggregation ends and how long its clients
    trained; raises when a client fails or the cohort is incomplete."""

    def __init__(self, clients_per_round: int, num_clients: int):
        super().__init__(fraction_train=clients_per_round / num_clients, fraction_evaluate=0.0,
                         min_train_nodes=clients_per_round, min_available_nodes=num_clients)
        self.clients_per_round = clients_per_round
        self.ends: list[float] = []
        self.client_seconds: list[float] = []

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if not self.ends:
            self.ends.append(time.perf_counter())
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        failed = [m.error.reason for m in replies if m.has_error()]
        if failed or len(replies) != self.clients_per_round:
            raise RuntimeError(f"round {server_round}: {len(replies)} replies, "
                               f"{len(failed)} failed: {failed[:3]}")
        self.client_seconds.append(sum(float(m.content["metrics"]["train-seconds"])
                                       for m in replies))
        result = super().aggregate_train(server_round, replies)
        self.ends.append(time.perf_counter())
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients-per-round", type=int, default=10)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--cpus-per-client", type=float, default=1.0,
                        help="Ray CPUs per client actor (1: one actor per core)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # inherited by the Ray workers
    with np.load(args.data) as data:
        num_clients = int(data["sizes"].shape[0])
        initial = [data[f"param_{i}"] for i in range(len(data.files) - 3)]
    strategy = TimedFedAvg(args.clients_per_round, num_clients)
    server_app = ServerApp()

    @server_app.main()
    def server(grid: Grid, context: Context) -> None:
        config = ConfigRecord({"data": os.path.abspath(args.data), "seed": args.seed,
                               "local-steps": args.local_steps, "batch-size": args.batch_size,
                               "learning-rate": args.learning_rate})
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(initial),
                                num_rounds=args.rounds, train_config=config)
        np.savez(args.out, *result.arrays.to_numpy_ndarrays())

    started = time.perf_counter()
    run_simulation(server_app, client_app, num_supernodes=num_clients,
                   backend_config={"client_resources": {"num_cpus": args.cpus_per_client,
                                                        "num_gpus": 0.0}})
    if len(strategy.ends) != args.rounds + 1 or not os.path.exists(args.out):
        raise SystemExit(f"the Flower run stopped after {max(len(strategy.ends) - 1, 0)} of "
                         f"{args.rounds} rounds (see its log above)")
    print(json.dumps({
        "round_seconds": np.diff(strategy.ends).tolist(),
        "client_train_seconds": strategy.client_seconds,
        "total_seconds": time.perf_counter() - started,
        "flwr": importlib.metadata.version("flwr"), "ray": importlib.metadata.version("ray"),
        "client": f"JAX {jax.__version__} jit on {os.environ['JAX_PLATFORMS']}",
        "cpus_per_client": args.cpus_per_client}))


if __name__ == "__main__":
    # Ray workers unpickle the ClientApp for every message; importing it by module name
    # (not from __main__) lets them import this file once and keep its jit and data caches.
    import flower_fedavg_app

    flower_fedavg_app.main()
