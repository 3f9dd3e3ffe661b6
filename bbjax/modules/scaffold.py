"""``ScaffoldRound``: one round of SCAFFOLD (Karimireddy et al. 2020) as a Module.

The initiator sends the global parameters and the server's control variate ``c`` (the
``aggregator`` slot's rule state) to the clients; each client loads both, takes
``local_steps`` corrected SGD steps, updates its own control variate and gathers its
parameters, control delta, mean loss and example count to the server. The server rejects
a client whose parameters, control delta or loss hold a NaN or an infinity, whose count is
negative or exceeds ``max_weight`` (None: no cap), and its ``aggregator`` slot (a
``rule_aggregator`` over ``bbjax.aggregators.scaffold``) moves the global parameters and
``c`` with the others. Outputs ``train_loss``, ``participants`` and ``rejected`` as
:class:`~bbjax.modules.FedAvgRound`. Slots: ``model``
(``bbjax.components.scaffold_model``), ``data`` (a DataSource with ``num_examples``) and
``aggregator``.
"""

from __future__ import annotations

import jax.numpy as jnp

from bbjax._checks import check_count
from bbjax.aggregators.base import admitted_clients, check_max_weight, count
from bbjax.dsl import Graph, Module
from bbjax.modules.fedavg import mean_loss


class ScaffoldRound(Module):
    name = "scaffold"

    def __init__(self, local_steps: int = 1, num_clients: int | None = None,
                 max_weight: float | None = None):
        self.local_steps = check_count("local_steps", local_steps)
        self.num_clients = num_clients
        self.max_weight = check_max_weight("ScaffoldRound", max_weight)

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
        admitted = admitted_clients((updates, deltas, client_losses), weights, arrived,
                                    self.max_weight)
        new_global, _ = g.slot("aggregator").aggregate_stacked(current, updates, weights,
                                                              admitted, deltas)
        g.slot("model").load_parameters(new_global)
        g.output("train_loss", mean_loss(client_losses, weights, admitted))
        g.output("participants", count(arrived))
        g.output("rejected", count(arrived & ~admitted))
