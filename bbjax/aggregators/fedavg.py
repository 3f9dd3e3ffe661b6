"""FedAvg (McMahan et al. 2017) and FedAvgM (Hsu et al. 2019), as Flower's ``FedAvg`` and
``FedAvgM`` strategies compute them."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from bbjax.aggregators.base import (Aggregator, EmptyState, Params, check_cohort, skip_round,
                                    present_clients, require)
from bbjax.aggregators.columns import client_sum


def weighted_mean(client_params: Params, weights: jax.Array,
                  present: jax.Array) -> tuple[Params, jax.Array]:
    """Mean of the present clients weighted by ``weights``; and whether it exists.

    Returns ``(mean, skip)``: ``skip`` is True when the present weights sum to zero, and
    ``mean`` is then all zeros.
    """
    w = jnp.where(present, weights, 0)
    total = jnp.sum(w)
    skip = total <= 0
    coef = jnp.where(skip, 0, w / jnp.where(skip, 1, total))
    return jax.tree.map(lambda x: client_sum(coef, x, present), client_params), skip


def fedavg() -> Aggregator:
    """Weighted average ``sum_i n_i w_i / sum_i n_i`` of the present clients (Flower
    ``FedAvg``). ``weights`` are the clients' example counts, non-negative and finite.

    A client with a NaN or infinite parameter counts as absent, like a masked one.
    """

    def init(global_params: Params) -> EmptyState:
        return EmptyState()

    def aggregate(state: EmptyState, global_params: Params, client_params: Params,
                  weights: Any, mask: Any = None) -> tuple[Params, EmptyState]:
        _, weights, mask = check_cohort("fedavg", global_params, client_params, weights, mask)
        mean, skip = weighted_mean(client_params, weights, present_clients(client_params, mask))
        return skip_round(skip, global_params, mean), state

    return Aggregator(init, aggregate)


class FedAvgMState(NamedTuple):
    """Server momentum buffer, zero before the first round."""

    momentum: Params


def fedavgm(server_learning_rate: float = 1.0, server_momentum: float = 0.0) -> Aggregator:
    """FedAvg with server momentum (Flower ``FedAvgM``).

    With ``d = global - fedavg(clients)``: ``m = server_momentum * m + d`` and
    ``global = global - server_learning_rate * m``. As in Flower, the defaults
    (1.0, 0.0) return the FedAvg result itself.
    """
    require(server_learning_rate > 0,
            f"fedavgm: server_learning_rate must be > 0, got {server_learning_rate!r}")
    require(server_momentum >= 0,
            f"fedavgm: server_momentum must be >= 0, got {server_momentum!r}")
    server_opt = server_learning_rate != 1.0 or server_momentum != 0.0

    def init(global_params: Params) -> FedAvgMState:
        return FedAvgMState(jax.tree.map(jnp.zeros_like, global_params))

    def aggregate(state: FedAvgMState, global_params: Params, client_params: Params,
                  weights: Any, mask: Any = None) -> tuple[Params, FedAvgMState]:
        _, weights, mask = check_cohort("fedavgm", global_params, client_params, weights, mask)
        mean, skip = weighted_mean(client_params, weights, present_clients(client_params, mask))
        if not server_opt:
            return skip_round(skip, global_params, mean), state
        momentum = jax.tree.map(lambda m, g, a: server_momentum * m + (g - a),
                                state.momentum, global_params, mean)
        new = jax.tree.map(lambda g, m: g - server_learning_rate * m, global_params, momentum)
        return (skip_round(skip, global_params, new),
                FedAvgMState(skip_round(skip, state.momentum, momentum)))

    return Aggregator(init, aggregate)
