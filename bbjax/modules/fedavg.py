"""``FedAvgRound``: one round of federated averaging as a Module.

The ``self`` class (the round's initiator, normally the server's node) sends the global
parameters to the ``client`` class; each client loads them, takes ``local_steps`` training
steps on its own data, and gathers its parameters, mean loss and example count to the
``server`` class; the server averages the parameters of the clients that arrived, weighted
by their example counts (McMahan et al.; with ``weighted=False`` equally, for data sources
without ``num_examples``; a round where none arrived keeps the global parameters) and
loads the result. With ``rule`` (a
stateless ``bbjax.aggregators`` rule such as ``median()``, ``trimmed_mean()``, ``krum()``)
and a fixed ``num_clients``, the server applies that rule to the arrived updates instead.
With ``aggregator=True`` the server hands the stacked updates, weights, arrival mask and
losses to an Aggregator slot's ``aggregate_stacked`` instead (e.g.
``bbjax.components.rule_aggregator`` over any rule, stateful ones such as ``fedadam``
included: their state lives in the slot). Slots: ``model`` (a Model), ``data`` (a
DataSource) and, with ``aggregator=True``, ``aggregator``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from bbjax.dsl import Graph, Module


class FedAvgRound(Module):
    name = "fedavg"

    def __init__(self, local_steps: int = 1, rule: Any = None, num_clients: int | None = None,
                 weighted: bool = True, aggregator: bool = False):
        if local_steps < 1:
            raise ValueError(f"local_steps must be >= 1, got {local_steps}")
        if rule is not None and num_clients is None:
            raise ValueError("an aggregation rule needs a fixed num_clients (cohort shape)")
        if rule is not None and aggregator:
            raise ValueError("give either a rule or aggregator=True, not both")
        self.local_steps = local_steps
        self.rule = rule
        self.num_clients = num_clients
        self.weighted = weighted
        self.aggregator = aggregator

    def body(self, g: Graph) -> None:
        clients, server = g.peers("client", self.num_clients), g.peers("server")
        on_client = g.send("global", g.slot("model").params(), to=clients)
        g.slot("model").load_parameters(on_client)
        losses, trigger = [], on_client
        for _ in range(self.local_steps):
            x, y = g.slot("data").next_batch(after=trigger)
            trigger = g.slot("model").train(x, y)
            losses.append(trigger)
        count = (g.slot("data").num_examples(after=trigger) if self.weighted
                 else jnp.int32(1))
        local = (g.slot("model").params(), jnp.mean(jnp.stack(losses)), count)
        (updates, client_losses, counts), arrived = g.gather("update", local, to=server,
                                                             senders=clients)
        current = g.slot("model").params(after=arrived)
        weights = arrived.astype(jnp.float32) * counts.astype(jnp.float32)
        total = jnp.sum(weights)

        def average(stacked, old):
            mean = jnp.tensordot(weights, stacked, 1) / jnp.maximum(total, 1)
            return jnp.where(total > 0, mean, old).astype(old.dtype)

        if self.aggregator:
            new_global, _ = g.slot("aggregator").aggregate_stacked(current, updates, weights,
                                                                  arrived, client_losses)
        elif self.rule is None:
            new_global = jax.tree.map(average, updates, current)
        else:
            new_global, _ = self.rule.aggregate(self.rule.init(current), current, updates,
                                                weights, arrived)
        g.slot("model").load_parameters(new_global)
        g.output("train_loss", jnp.sum(weights * client_losses) / jnp.maximum(total, 1))
        g.output("participants", jnp.sum(arrived.astype(jnp.int32)))
