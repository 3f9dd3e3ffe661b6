"""FedAvg over 100 simulated clients, 10 per round, in one jitted program per round.

Builds everything by hand (what ``bbjax simulate`` does from a configuration): the
FedProx Synthetic(1, 1) data split per client into train and test rows, a flax MLP with
SGD as the ``model`` slot, a padded data source as the ``data`` slot (each client's state
holds its own shard), ``FedAvgRound`` compiled into its partitions, and a population of one
server and 100 clients of which 10 are sampled each round. ``bbjax.simulate`` vmaps every
partition over its peers and routes the messages between them inside jit.

    python examples/simulate_fedavg.py [--rounds 60] [--plot fedavg.png]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import bbjax
from bbjax.models import MLP, cross_entropy
from bbjax.modules import FedAvgRound


def main(rounds: int = 60, num_clients: int = 100, per_round: int = 10, local_steps: int = 20,
         plot: str | None = None) -> bbjax.History:
    data = bbjax.data.synthetic(1.0, 1.0, num_clients=num_clients, seed=0, max_size=1000)
    train, test = bbjax.data.train_test_split(jax.random.PRNGKey(0), data, test_fraction=0.2)
    model = bbjax.components.flax_model(MLP(60, 64, 10, rngs=nnx.Rngs(0)), optax.sgd(0.05),
                                        cross_entropy)
    source = bbjax.components.padded_data_source(train.x[0], train.y[0], int(train.sizes[0]),
                                                 batch_size=10)
    compiled = (bbjax.Compiler().bind("model", model).bind("data", source)
                .compile(FedAvgRound(local_steps)))
    population = {
        "server": 1,  # also plays the round's initiator ("self")
        "client": bbjax.Peers(num_clients, init_args={"data": (train.x, train.y, train.sizes)},
                              cohort=per_round),
    }

    def evaluate(states):
        """Accuracy of the server's model on every client's test rows."""
        server = jax.tree.map(lambda a: a[0], states["server"]["model"])
        logits = model.call("forward", server, jnp.asarray(test.x).reshape(-1, 60))[1]
        mask = jnp.asarray(test.mask).reshape(-1)
        hits = (jnp.argmax(logits, -1) == jnp.asarray(test.y).reshape(-1)) & mask
        return {"accuracy": hits.sum() / mask.sum()}

    history = bbjax.simulate(compiled, population, rounds, jax.random.PRNGKey(0),
                             bindings={"model": model, "data": source}, evaluate=evaluate,
                             eval_every=5, progress=True)
    accuracy = history["accuracy"]
    print(f"{rounds} rounds in {history.seconds:.1f} s (compilation included); accuracy "
          f"{accuracy[4]:.3f} after 5 rounds, {accuracy[-1]:.3f} after {rounds}")
    if plot:
        history.plot(plot)
    return history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--plot", default=None, help="write a PNG of accuracy and loss")
    args = parser.parse_args()
    main(rounds=args.rounds, plot=args.plot)
