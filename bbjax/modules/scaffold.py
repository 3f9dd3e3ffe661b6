"""``ScaffoldRound``: one round of SCAFFOLD (Karimireddy et al. 2020) as a Module.

The initiator sends the global parameters and the server's control variate ``c`` (the
``aggregator`` slot's rule state) to the clients; each client loads both, takes
``local_steps`` corrected SGD steps, updates its own control variate and gathers its
parameters, control delta, mean loss and example count to the server, whose
``aggregator`` slot (a ``rule_aggregator`` over ``bbjax.aggregators.scaffold``) moves the
global parameters and ``c``. Slots: ``model`` (``bbjax.components.scaffold_model``),
``data`` (a DataSource with ``num_examples``) and ``aggregator``.
"""

from __future__ import annotations

import jax.numpy as jnp

from bbjax.dsl import Graph, Module


class ScaffoldRound(Module):
    name = "scaffold"

    def __init__(self, local_steps: int = 1, num_clients: int | None = None):
        if local_steps < 1:
            raise ValueError(f"local_steps must be >= 1, got {local_steps}")
        self.local_steps = local_steps
        self.num_clients = num_clients

    def body(self, g: Graph) -> None:
        clients, server = g.peers("client", self.num_clients), g.peers("server")
        control = g.slot("aggregator").rule_state().control
        params, c = g.send("global", (g.slot("model").params(), control), to=clients)
        g.slot("model").load_parameters(params)
        g.slot("model").load_control(c)  # model calls run in order: before the training
        losses, trigger = [], params
        for _ in range(self.local_steps):
            x, y = g.slot("data").next_batch(after=trigger)
            trigger = g.slot("model").train(x, y)
            losses.append(trigger)
        delta = g.slot("model").control_update(after=trigger)
        local = (g.slot("model").params(), delta, jnp.mean(jnp.stack(losses)),
                 g.slot("data").num_examples(after=trigger))
        (updates, deltas, client_losses, counts), arrived = g.gather(
            "update", local, to=server, senders=clients)
        current = g.slot("model").params(after=arrived)
        weights = arrived.astype(jnp.float32) * counts.astype(jnp.float32)
        new_global, _ = g.slot("aggregator").aggregate_stacked(current, updates, weights,
                                                              arrived, deltas)
        g.slot("model").load_parameters(new_global)
        g.output("train_loss", jnp.sum(weights * client_losses) / jnp.maximum(jnp.sum(weights), 1))
        g.output("participants", jnp.sum(arrived.astype(jnp.int32)))
