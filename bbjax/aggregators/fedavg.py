"""FedAvg (McMahan et al. 2017) and FedAvgM (Hsu et al. 2019), as Flower's ``FedAvg`` and
``FedAvgM`` strategies compute them; and :func:`mean_rule`, the shape of every rule that
is a weighted mean followed by a server step."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from bbjax.aggregators.base import (Aggregator, Cohort, Params, Reduced, aggregation_rule,
                                    check_max_weight, mean_coefficients, plus, relative,
                                    require, skip_round)
from bbjax.algorithms.base import EmptyState
from bbjax.aggregators.columns import client_sum

def weighted_mean(client_params: Params, weights: jax.Array,
                  present: jax.Array) -> tuple[Params, jax.Array]:
    """Mean of the present clients weighted by ``weights``; and whether it exists.

    Returns ``(mean, skip)``: ``skip`` is True when the present weights sum to zero, and
    ``mean`` is then all zeros.
    """
    coef, skip = mean_coefficients(weights, present)
    return jax.tree.map(lambda x: client_sum(coef, x, present), client_params), skip


def mean_rule(name: str, init: Callable[[Params], Any], server: Callable[..., tuple[Params, Any]],
              max_weight: float | None) -> Aggregator:
    """A rule that takes the weighted mean of the present clients, then
    ``server(state, mean, origin, skip) -> (point, state)`` (``origin``: the frame's
    global model, None for updates). An update already reduced by an earlier stage is
    the mean itself."""

    def reduce(state: Any, cohort: Cohort, params: Params, stack: Params,
               origin: Params | None) -> Reduced:
        mean, skip = weighted_mean(stack, cohort.weights, cohort.present)
        point, state = server(state, mean, origin, skip)
        return Reduced(point, state, cohort.present, skip)

    def server_step(state: Any, update: Params) -> tuple[Params, Any]:
        return server(state, update, None, jnp.bool_(False))

    return aggregation_rule(name, init, reduce, max_weight, server_step=server_step)


def _empty(global_params: Params) -> EmptyState:
    return EmptyState()


def fedavg(max_weight: float | None = None) -> Aggregator:
    """Weighted average ``sum_i n_i x_i / sum_i n_i`` of the clients taking part (Flower
    ``FedAvg``); ``weights`` are their example counts ``n_i``. Clients are rejected as in
    :mod:`bbjax.aggregators.base` (``max_weight``: the largest count accepted)."""
    max_weight = check_max_weight("fedavg", max_weight)
    return mean_rule("fedavg", _empty, lambda state, mean, origin, skip: (mean, state),
                     max_weight)


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

    def server(state: FedAvgMState, mean: Params, origin: Params | None,
               skip: jax.Array) -> tuple[Params, FedAvgMState]:
        if not server_opt:
            return mean, state
        d = jax.tree.map(jnp.negative, relative(mean, origin))
        momentum = jax.tree.map(lambda m, d: server_momentum * m + d, state.momentum, d)
        point = plus(origin, jax.tree.map(lambda m: -server_learning_rate * m, momentum))
        return point, FedAvgMState(skip_round(skip, state.momentum, momentum))

    return mean_rule("fedavgm", init, server, max_weight)
