"""``LocalRound``: the :class:`~bbjax.strategies.config.Local` strategy, one peer that
trains on its own data and talks to no one."""

from __future__ import annotations

import jax.numpy as jnp

from bbjax._checks import check_count
from bbjax.dsl import Graph, Module


class LocalRound(Module):
    """``local_steps`` training steps of the ``model`` slot on ``data`` batches, on the
    ``self`` peer alone. Output: ``train_loss``, the mean loss of the steps."""

    name = "local"

    def __init__(self, local_steps: int = 1):
        self.local_steps = check_count("local_steps", local_steps)

    def body(self, g: Graph) -> None:
        losses, trigger = [], None
        for _ in range(self.local_steps):
            x, y = g.slot("data").next_batch(after=trigger)
            trigger = g.slot("model").train(x, y)
            losses.append(trigger)
        g.output("train_loss", jnp.mean(jnp.stack(losses)))
