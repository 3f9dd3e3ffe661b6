"""``FedAvgRound``: one round of federated averaging as a Module.

The ``self`` class (the round's initiator, normally the server's node) sends the global
parameters to the ``client`` class; each client loads them, takes ``local_steps`` training
steps on its own data, and gathers its parameters, mean loss and example count to the
``server`` class. The server rejects a client whose parameters or loss hold a NaN or an
infinity, whose count is negative or whose count exceeds ``max_weight`` (None: no cap)
(:func:`bbjax.aggregators.base.admitted_clients`), then aggregates the others' parameters
with ``rule`` (default :func:`bbjax.aggregators.fedavg`: weighted by example counts, or
equally with ``weighted=False`` for data sources without ``num_examples``) and loads the
result; a round where no client is left keeps the global parameters. Any other rule (a
stateless ``bbjax.aggregators`` rule such as ``median()``, ``trimmed_mean()``, ``krum()``,
or any deterministic ``bbjax.algorithms.Algorithm`` over the cohort, e.g.
``chain(privacy.clip(1.0), aggregators.fedavg())``, which gets the clients' deltas with
``weights`` and the admitted ``mask`` and returns the update the server adds) needs a
fixed ``num_clients``; its state starts afresh every round. With ``aggregator=True`` the
server hands the stacked updates, weights, mask of admitted clients and losses to an
Aggregator slot's ``aggregate_stacked`` instead (e.g. ``bbjax.components.rule_aggregator`` over any rule,
stateful ones such as ``fedadam`` included: their state lives in the slot).

Outputs: ``train_loss`` (the example-weighted mean loss of the clients that took part),
``participants`` (clients whose update arrived) and ``rejected`` (int32: arrived clients
rejected by the round or by the rule). Slots: ``model`` (a Model), ``data`` (a DataSource)
and, with ``aggregator=True``, ``aggregator``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from bbjax import aggregators
from bbjax._checks import check_count
from bbjax.aggregators.base import admitted_clients, check_max_weight, count, mean_coefficients
from bbjax.algorithms import Algorithm, apply_updates
from bbjax.dsl import Graph, Module
from bbjax.errors import InvalidArgument


def train_locally(g: Graph, clients: Any, local_steps: int) -> tuple[list, Any]:
    """Send the ``model`` slot's parameters to ``clients``, load them there and take
    ``local_steps`` steps on ``data`` batches; returns the step losses and the last one."""
    on_client = g.send("global", g.slot("model").params(), to=clients)
    g.slot("model").load_parameters(on_client)
    losses, trigger = [], on_client
    for _ in range(local_steps):
        x, y = g.slot("data").next_batch(after=trigger)
        trigger = g.slot("model").train(x, y)
        losses.append(trigger)
    return losses, trigger


class FedAvgRound(Module):
    name = "fedavg"

    def __init__(self, local_steps: int = 1,
                 rule: aggregators.Aggregator | Algorithm | None = None,
                 num_clients: int | None = None, weighted: bool = True,
                 aggregator: bool = False, max_weight: float | None = None):
        self.local_steps = check_count("local_steps", local_steps)
        if rule is not None and num_clients is None:
            raise InvalidArgument("an aggregation rule needs a fixed num_clients (cohort shape)")
        if rule is not None and aggregator:
            raise InvalidArgument("give either a rule or aggregator=True, not both")
        if rule is not None and not callable(getattr(rule, "update", None)):
            raise InvalidArgument(f"rule must be a bbjax.aggregators rule or a "
                                  f"bbjax.algorithms.Algorithm, got {type(rule).__name__}")
        self.rule = aggregators.fedavg() if rule is None else rule
        self.num_clients = num_clients
        self.weighted = weighted
        self.aggregator = aggregator
        self.max_weight = check_max_weight("FedAvgRound", max_weight)

    def body(self, g: Graph) -> None:
        clients, server = g.peers("client", self.num_clients), g.peers("server")
        losses, trigger = train_locally(g, clients, self.local_steps)
        num = (g.slot("data").num_examples(after=trigger) if self.weighted
               else jnp.int32(1))
        local = (g.slot("model").params(), jnp.mean(jnp.stack(losses)), num)
        (updates, client_losses, counts), arrived = g.gather("update", local, to=server,
                                                             senders=clients)
        current = g.slot("model").params(after=arrived)
        weights = arrived.astype(jnp.float32) * counts.astype(jnp.float32)
        admitted = admitted_clients((updates, client_losses), weights, arrived, self.max_weight)
        if self.aggregator:
            new_global, _ = g.slot("aggregator").aggregate_stacked(current, updates, weights,
                                                                  admitted, client_losses)
            took_part, rule_rejected = admitted, 0
        elif isinstance(self.rule, aggregators.Aggregator):
            out = self.rule.apply(self.rule.init(current), current, updates, weights, admitted)
            new_global, took_part, rule_rejected = out.params, out.present, out.rejected
        else:
            deltas = jax.tree.map(lambda x, g: x - g, updates, current)
            inputs = {name: value for name, value in (("weights", weights), ("mask", admitted))
                      if name in self.rule.inputs}
            step, _ = self.rule.update(deltas, self.rule.init(current), current, **inputs)
            new_global, took_part, rule_rejected = apply_updates(current, step), admitted, 0
        g.slot("model").load_parameters(new_global)
        g.output("train_loss", mean_loss(client_losses, weights, took_part))
        g.output("participants", count(arrived))
        g.output("rejected", count(arrived & ~admitted) + rule_rejected)


def mean_loss(losses: Any, weights: Any, took_part: Any) -> Any:
    """The ``weights``-weighted mean of the ``losses`` of the clients that took part (0 when
    none did)."""
    coef, _ = mean_coefficients(weights, took_part)
    return jnp.sum(jnp.where(took_part, coef * losses, 0))
