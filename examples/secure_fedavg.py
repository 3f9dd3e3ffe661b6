"""FedAvg under PET masking, simulated: 20 clients of FedProx Synthetic(1, 1), 5 per round.

The same population, cohorts and initial states run once under ``SecureFedAvgRound`` (the
server sees only masked models, the sum participants only seeds) and once under the plain
``FedAvgRound``; the script prints both runs' accuracy per round and how far apart their
global models end up (float32 noise: the secure mean is exact up to ``n / 10**10``).

    python examples/secure_fedavg.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import bbjax
from bbjax.components import flax_model, padded_data_source
from bbjax.models import LogisticRegression, cross_entropy
from bbjax.modules import FedAvgRound
from bbjax.modules.secure_fedavg import SecureFedAvgRound
from bbjax.simulation import Peers, Simulation, simulate

LOCAL_STEPS, CLIENTS, COHORT = 5, 20, 5


def main(rounds: int = 5) -> dict:
    """Run both and return the accuracies per round, the secure run's metrics and the
    largest difference between the two final global models."""
    data = bbjax.data.synthetic(1.0, 1.0, num_clients=CLIENTS, seed=0, max_size=200)
    train, test = bbjax.data.train_test_split(jax.random.key(0), data, test_fraction=0.2)
    model = flax_model(LogisticRegression(60, 10, rngs=nnx.Rngs(0)), optax.sgd(0.05), cross_entropy)
    source = padded_data_source(train.x[0], train.y[0], int(train.sizes[0]), batch_size=10)
    clients = Peers(CLIENTS, init_args={"data": (train.x, train.y, train.sizes)}, cohort=COHORT)
    cap = float(train.sizes.max())  # scalars count / cap lie in [0, 1], the B0 unit bound

    def evaluate(states):
        server = jax.tree.map(lambda a: a[0], states["server"]["model"])
        logits = model.call("forward", server, jnp.asarray(test.x).reshape(-1, 60))[1]
        mask = jnp.asarray(test.mask).reshape(-1)
        hits = (jnp.argmax(logits, -1) == jnp.asarray(test.y).reshape(-1)) & mask
        return {"accuracy": hits.sum() / mask.sum()}

    secure = SecureFedAvgRound(LOCAL_STEPS, max_weight=cap)
    bindings = {"model": model, "data": source,
                "pet": secure.masking(model.init(jax.random.key(0)).params)}
    compiler = bbjax.Compiler(inline=["model", "data"])  # the pet slot runs as JAX
    for slot, component in bindings.items():
        compiler = compiler.bind(slot, component)
    population = {"server": 1, "client": clients, "sum": 1}
    key = jax.random.key(0)
    compiled = compiler.compile(secure)
    start = Simulation(compiled, population, bindings).init(key)
    plain_bindings = {"model": model, "data": source}
    plain_start = jax.tree.map(jnp.copy, {  # simulate donates the states it starts from
        entry: {slot: start[entry][slot] for slot in plain_bindings if slot in start[entry]}
        for entry in ("server", "client")})
    masked = simulate(compiled, population, rounds, key, bindings=bindings,
                      initial_states=start, evaluate=evaluate)

    plain = (bbjax.Compiler().bind("model", model).bind("data", source)
             .compile(FedAvgRound(LOCAL_STEPS, max_weight=cap)))
    reference = simulate(plain, {"server": 1, "client": clients}, rounds, key,
                         bindings=plain_bindings, initial_states=plain_start, evaluate=evaluate)

    leaves = zip(jax.tree.leaves(masked.states["server"]["model"].params),
                 jax.tree.leaves(reference.states["server"]["model"].params))
    gap = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in leaves)
    print("round  accuracy (PET)  accuracy (plain)  included  unmasked")
    for r in range(rounds):
        print(f"{r + 1:5d}  {masked['accuracy'][r]:14.4f}  {reference['accuracy'][r]:16.4f}  "
              f"{masked['included'][r]:8.0f}  {masked['unmasked'][r]:8.0f}")
    print(f"max |PET global - plain global| after {rounds} rounds: {gap:.2e}")
    return {"accuracy": list(masked["accuracy"]), "plain_accuracy": list(reference["accuracy"]),
            "included": list(masked["included"]), "unmasked": list(masked["unmasked"]),
            "gap": gap}


if __name__ == "__main__":
    main()
