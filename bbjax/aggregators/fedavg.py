"""FedAvg (McMahan et al. 2017) and FedAvgM (Hsu et al. 2019), as Flower's ``FedAvg`` and
``FedAvgM`` strategies compute them."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from bbjax.aggregators.base import (Aggregation, Aggregator, EmptyState, Params,
                                    check_cohort, check_max_weight, mean_coefficients,
                                    outcome, require, skip_round)
from bbjax.aggregators.columns import client_sum


def weighted_mean(client_params: Params, weights: jax.Array,
                  present: jax.Array) -> tuple[Params, jax.Array]:
    """Mean of the present clients weighted by ``weights``; and whether it exists.

    Returns ``(mean, skip)``: ``skip`` is True when the present weights sum to zero, and
    ``mean`` is then all zeros.
    """
    coef, skip = mean_coefficients(weights, present)
    return jax.tree.map(lambda x: client_sum(coef, x, present), client_params), skip


def fedavg(max_weight: float | None = None) -> Aggregator:
    """Weighted average ``sum_i n_i x_i / sum_i n_i`` of the clients taking part (Flower
    ``FedAvg``); ``weights`` are their example counts ``n_i``. Clients are rejected as in
    :mod:`bbjax.aggregators.base` (``max_weight``: the largest count accepted)."""
    max_weight = check_max_weight("fedavg", max_weight)

    def init(global_params: Params) -> EmptyState:
        return EmptyState()

    def apply(state: EmptyState, global_params: Params, client_params: Params,
              weights: Any, mask: Any = None) -> Aggregation:
        cohort = check_cohort("fedavg", global_params, client_params, weights, mask, max_weight)
        mean, skip = weighted_mean(client_params, cohort.weights, cohort.present)
        return outcome(cohort, skip, global_params, mean, state)

    return Aggregator(init, apply)


class FedAvgMState(NamedTuple):
    """Server momentum buffer, zero before the first round."""

    momentum: Params


def fedavgm(server_learning_rate: float = 1.0, server_momentum: float = 0.0,
            max_weight: float | None = None) -> Aggregator:
    """FedAvg with server momentum (Flower ``FedAvgM``).

    With ``d = global - fedavg(clients)``: ``m = server_momentum * m + d`` and
    ``global = global - server_learning_rate * m``. As in Flower, the defaults
    (1.0, 0.0) return the FedAvg result itself.
    """
    require(server_learning_rate > 0,
            f"fedavgm: server_learning_rate must be > 0, got {server_learning_rate!r}")
    require(server_momentum >= 0,
            f"fedavgm: server_momentum must be >= 0, got {server_momentum!r}")
    max_weight = check_max_weight("fedavgm", max_weight)
    server_opt = server_learning_rate != 1.0 or server_momentum != 0.0

    def init(global_params: Params) -> FedAvgMState:
        return FedAvgMState(jax.tree.map(jnp.zeros_like, global_params))

    def apply(state: FedAvgMState, global_params: Params, client_params: Params,
              weights: Any, mask: Any = None) -> Aggregation:
        cohort = check_cohort("fedavgm", global_params, client_params, weights, mask,
                              max_weight)
        mean, skip = weighted_mean(client_params, cohort.weights, cohort.present)
        if not server_opt:
            return outcome(cohort, skip, global_params, mean, state)
        momentum = jax.tree.map(lambda m, g, a: server_momentum * m + (g - a),
                                state.momentum, global_params, mean)
        new = jax.tree.map(lambda g, m: g - server_learning_rate * m, global_params, momentum)
        return outcome(cohort, skip, global_params, new,
                       FedAvgMState(skip_round(skip, state.momentum, momentum)))

    return Aggregator(init, apply)
