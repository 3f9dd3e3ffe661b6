"""Quickstart: one Module, one node — a data source feeds a model that trains.

Write a Module body over slots, bind components to the slots, compile, install the
partition on a Node and drive it: each ``start()`` + ``poll()`` runs one training step
and returns the loss as an app output.

    python examples/quickstart.py
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import bbjax
from bbjax.models import MLP, cross_entropy
from bbjax.runtime import AppOutput


class TrainStep(bbjax.Module):
    """Draw a batch, take one optimizer step, report the loss."""

    name = "train_step"

    def body(self, g):
        x, y = g.slot("data").next_batch()
        loss = g.slot("model").train(x, y)
        g.output("loss", loss)


def make_data(n: int = 512, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(16, 3)), axis=1).astype(np.int32)
    return x, y


def main(steps: int = 60) -> list[float]:
    x, y = make_data()
    # any flax model (nnx or linen) will do; bbjax.models has a few small ones
    model = bbjax.components.flax_model(MLP(16, 32, 3, rngs=nnx.Rngs(0)), optax.adam(1e-2),
                                        cross_entropy)
    data = bbjax.components.array_data_source(x, y, batch_size=32)

    compiled = bbjax.Compiler().bind("model", model).bind("data", data).compile(TrainStep())
    print("partitions:", compiled.partitions)
    node = bbjax.install(0, compiled, ["train_step"], {"model": model, "data": data})

    losses = []
    for _ in range(steps):
        node.start()
        losses += [float(s.value) for s in node.poll() if isinstance(s, AppOutput)]
    print(f"loss: first {np.mean(losses[:5]):.3f}, last {np.mean(losses[-5:]):.3f}")
    logits = model.call("forward", node.states["model"], jnp.asarray(x))[1]
    print(f"train accuracy: {float(jnp.mean(jnp.argmax(logits, -1) == y)):.3f}")
    return losses


if __name__ == "__main__":
    main()
