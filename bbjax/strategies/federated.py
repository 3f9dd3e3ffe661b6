"""A :class:`~bbjax.strategies.config.Federated` strategy as a FedAvg round: its server
rule, its clients' objective and who takes part.

- ``FedAvg``: :class:`~bbjax.modules.FedAvgRound`'s mean weighted by example counts.
- ``FedProx{mu}``: the same server, clients training :func:`~bbjax.components.
  fedprox_model` (``loss + μ/2‖w − w_g‖²`` anchored at the round's global model).
- ``FedYogi{beta1, beta2, tau, eta}``: :func:`bbjax.aggregators.fedyogi` as the server's
  stateful ``aggregator`` slot (its moments live there).
- ``All``: every client; ``Random{fraction}``: ``Peers(cohort=ceil(f·N))``, distinct clients
  drawn with each round's cohort key; ``ByCapability{required_tags}``: a cohort function
  giving exactly the clients carrying every required tag.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from bbjax import aggregators
from bbjax.components import Component, rule_aggregator
from bbjax.data import FederatedData
from bbjax.dsl import Module
from bbjax.modules import FedAvgRound
from bbjax.simulation import Peers
from bbjax.strategies.config import ByCapability, Federated, FedProx, FedYogi, RandomClients


def yogi_rule(aggregation: FedYogi) -> aggregators.Aggregator:
    """The FedYogi server rule of ``aggregation``'s hyperparameters."""
    return aggregators.fedyogi(eta=aggregation.eta, beta_1=aggregation.beta1,
                               beta_2=aggregation.beta2, tau=aggregation.tau)


def cohort(strategy: Federated) -> Any:
    """The clients' ``Peers.cohort``: None (all), the count ``ceil(f·N)`` drawn each round,
    or a function of the round's key giving the eligible clients' ids."""
    selection = strategy.client_selection
    if isinstance(selection, RandomClients):
        return strategy.cohort_size()
    if isinstance(selection, ByCapability):
        ids = jnp.asarray(strategy.eligible(), jnp.int32)

        def capable(key: jax.Array) -> jax.Array:
            del key
            return ids

        return capable
    return None


def federated_round(strategy: Federated, model: Component, source: Component,
                    train: FederatedData) -> tuple[Module, dict[str, Component],
                                                   dict[str, Peers]]:
    """The round Module, its bindings and population for ``strategy``, ``model`` (FedProx's
    objective already, for ``FedProx``) and the clients' ``source`` over ``train``."""
    steps, n = strategy.training.local_steps, strategy.cohort_size()
    bindings = {"model": model, "data": source}
    if isinstance(strategy.aggregation, FedYogi):
        initial = model.init(jax.random.PRNGKey(strategy.training.seed)).params
        bindings["aggregator"] = rule_aggregator(yogi_rule(strategy.aggregation), n, initial)
        round_module = FedAvgRound(steps, num_clients=n, aggregator=True)
    else:
        round_module = FedAvgRound(steps)
    clients = Peers(strategy.num_clients, init_args={"data": (train.x, train.y, train.sizes)},
                    cohort=cohort(strategy))
    return round_module, bindings, {"server": Peers(1), "client": clients}


def proximal_mu(strategy: Federated) -> float | None:
    """FedProx's μ, or None for the other aggregations."""
    return strategy.aggregation.mu if isinstance(strategy.aggregation, FedProx) else None
