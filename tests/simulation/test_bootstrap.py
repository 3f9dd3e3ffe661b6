"""A Module's bootstrap runs once under ``simulate``, before the first round."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import bbjax
from bbjax.components import flax_model, padded_data_source
from bbjax.models import LogisticRegression, cross_entropy
from bbjax.modules import FedAvgRound
from bbjax.simulation import Peers, simulate


class ZeroStart(FedAvgRound):
    name = "zero_start"

    def bootstrap(self, g):
        start = g.slot("model").params()
        g.slot("model").load_parameters(jax.tree.map(jnp.zeros_like, start))
        g.output("start_norm", sum(jnp.sum(p ** 2) for p in jax.tree.leaves(start)))


def test_bootstrap_runs_before_the_first_simulated_round():
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(6, 3)).astype(np.float32) for _ in range(3)]
    ys = [rng.integers(0, 2, 6).astype(np.int32) for _ in range(3)]
    data = bbjax.data.FederatedData.from_clients(xs, ys)
    model = flax_model(LogisticRegression(3, 2, rngs=nnx.Rngs(0)), optax.sgd(0.0), cross_entropy)
    source = padded_data_source(data.x[0], data.y[0], int(data.sizes[0]), batch_size=2)
    population = {"server": 1, "client": Peers(3, init_args={"data": (data.x, data.y,
                                                                         data.sizes)})}
    runs = {}
    for module in (FedAvgRound(local_steps=1), ZeroStart(local_steps=1)):
        compiled = bbjax.Compiler().bind("model", model).bind("data", source).compile(module)
        history = simulate(compiled, population, 1, jax.random.key(0),
                           bindings={"model": model, "data": source})
        runs[module.name] = jax.tree.leaves(history.states["server"]["model"].params)
    # sgd(0.0) leaves the clients' copies of the global model unchanged, so the round's
    # average is the model the server started from: zeros only after the bootstrap.
    assert any(np.abs(np.asarray(leaf)).max() > 0 for leaf in runs["fedavg"])  # the kernel
    assert all(np.array_equal(np.asarray(leaf), np.zeros_like(leaf))
               for leaf in runs["zero_start"])
