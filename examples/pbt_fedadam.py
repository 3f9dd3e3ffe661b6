"""Population-based training of FedAdam's server and client learning rates: 8 federated
simulations (a server and 20 clients each, 5 per round) evolved by PBT, all in one program.

Each member is a whole federated run: its clients train with SGD at their own learning
rate (``optax.inject_hyperparams`` keeps the rate in the optimizer's state) and its server
aggregates with FedAdam at its own rate (``server_rate_aggregator`` keeps it in the
aggregator's state), so one compiled round serves every member. ``FederatedPopulation``
stacks the members' states and vmaps the round over them; after each generation of 3
rounds the worst quarter copies the best quarter (server, clients and rates) and perturbs
its rates by up to ±20%.

    python examples/pbt_fedadam.py [--generations 8] [--members 8]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import bbjax
from bbjax.models import LogisticRegression, cross_entropy
from bbjax.modules import FedAvgRound
from bbjax.simulation import Simulation
from bbjax.strategies.pbt import Float, Perturbation, SearchSpace, Truncation
from bbjax.strategies.pbt import federated as pbt_federated


def main(generations: int = 8, members: int = 8, rounds: int = 3, num_clients: int = 20,
         per_round: int = 5, seed: int = 0) -> bbjax.History:
    data = bbjax.data.synthetic(1.0, 1.0, num_clients=num_clients, seed=seed, max_size=200)
    train, test = bbjax.data.train_test_split(jax.random.PRNGKey(seed), data, 0.2)
    sgd = optax.inject_hyperparams(optax.sgd)(learning_rate=0.01)  # the rate is state
    model = bbjax.components.flax_model(LogisticRegression(60, 10, rngs=nnx.Rngs(seed)), sgd,
                                        cross_entropy)
    initial = model.init(jax.random.PRNGKey(seed)).params
    bindings = {
        "model": model,
        "data": bbjax.components.padded_data_source(train.x[0], train.y[0],
                                                    int(train.sizes[0]), batch_size=10),
        "aggregator": pbt_federated.server_rate_aggregator("fedadam", per_round, initial,
                                                           learning_rate=0.1),
    }
    compiler = bbjax.Compiler()
    for slot, component in bindings.items():
        compiler = compiler.bind(slot, component)
    compiled = compiler.compile(FedAvgRound(local_steps=5, num_clients=per_round,
                                            aggregator=True))
    simulation = Simulation(compiled, {"server": bbjax.Peers(1), "client": bbjax.Peers(
        num_clients, init_args={"data": (train.x, train.y, train.sizes)}, cohort=per_round)})
    x, y = jnp.asarray(test.x).reshape(-1, 60), jnp.asarray(test.y).reshape(-1)
    mask = jnp.asarray(test.mask).reshape(-1)

    def evaluate(states):
        """Fitness: the server model's negated loss on every client's test rows."""
        server = jax.tree.map(lambda a: a[0], states["server"]["model"])
        logits = model.call("forward", server, x)[1]
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return {"fitness": -jnp.sum(jnp.where(mask, losses, 0.0)) / mask.sum(),
                "accuracy": jnp.sum((jnp.argmax(logits, -1) == y) & mask) / mask.sum()}

    population = pbt_federated.FederatedPopulation(
        simulation, {"client_lr": pbt_federated.CLIENT_LEARNING_RATE,
                     "server_lr": pbt_federated.SERVER_LEARNING_RATE}, evaluate, rounds)
    space = SearchSpace({"client_lr": Float(0.001, 0.1), "server_lr": Float(0.001, 0.1)})
    history = pbt_federated.run(population, space, jax.random.PRNGKey(seed),
                                population_size=members, generations=generations,
                                exploit=Truncation(0.25), explore=Perturbation(0.2))
    for g in range(generations):
        print(f"generation {g}: best fitness {history['best_fitness'][g]:.4f}, mean "
              f"{history['mean_fitness'][g]:.4f}, best accuracy {history['accuracy'][g]:.3f} "
              f"(client lr {history['best_client_lr'][g]:.4f}, server lr "
              f"{history['best_server_lr'][g]:.4f})")
    best = history.best()
    print(f"best member {best} descends from {np.asarray(history.ancestry(best)).tolist()}; "
          f"{history.seconds:.1f} s, {history.compile_seconds:.1f} s compiling")
    return history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--members", type=int, default=8)
    args = parser.parse_args()
    main(generations=args.generations, members=args.members)
