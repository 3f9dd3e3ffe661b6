"""Adaptive server optimizers of Reddi et al. 2021, "Adaptive Federated Optimization":
FedAdagrad, FedAdam, FedYogi, as Flower's strategies of those names compute them.

Each round: ``delta = fedavg(clients) - global``, ``m = beta_1 * m + (1 - beta_1) * delta``,
a rule-specific ``v``, and ``global = global + lr * m / (sqrt(v) + tau)``. ``m`` and ``v``
start at zero. ``eta_l`` is the clients' learning rate: as in Flower it is accepted and
checked but the server update does not use it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from bbjax.aggregators.base import (Aggregator, Params, check_max_weight, plus, relative,
                                    require, skip_round)
from bbjax.aggregators.fedavg import mean_rule


class FedOptState(NamedTuple):
    """Rounds seen so far (Flower's ``server_round - 1`` before the call), first and second
    moments of the server pseudo-gradient."""

    count: jax.Array
    m: Params
    v: Params


def _check(rule: str, eta: float, eta_l: float, beta_1: float, beta_2: float,
           tau: float, max_weight: float | None) -> float | None:
    require(eta > 0, f"{rule}: eta must be > 0, got {eta!r}")
    require(eta_l > 0, f"{rule}: eta_l must be > 0, got {eta_l!r}")
    require(0 <= beta_1 < 1, f"{rule}: beta_1 must be in [0, 1), got {beta_1!r}")
    require(0 <= beta_2 < 1, f"{rule}: beta_2 must be in [0, 1), got {beta_2!r}")
    require(tau > 0, f"{rule}: tau must be > 0, got {tau!r}")
    return check_max_weight(rule, max_weight)


def _fedopt(rule: str, beta_1: float, second_moment: Callable[[Any, Any], Any],
            learning_rate: Callable[[jax.Array], Any], tau: float,
            max_weight: float | None) -> Aggregator:
    def init(global_params: Params) -> FedOptState:
        zeros = jax.tree.map(jnp.zeros_like, global_params)
        return FedOptState(jnp.zeros((), jnp.int32), zeros, zeros)

    def server(state: FedOptState, mean: Params, origin: Params | None,
               skip: jax.Array) -> tuple[Params, FedOptState]:
        delta = relative(mean, origin)
        m = jax.tree.map(lambda m, d: beta_1 * m + (1 - beta_1) * d, state.m, delta)
        v = jax.tree.map(second_moment, state.v, delta)
        lr = learning_rate(state.count)
        point = plus(origin, jax.tree.map(lambda m, v: lr * m / (jnp.sqrt(v) + tau), m, v))
        return point, FedOptState(state.count + 1, skip_round(skip, state.m, m),
                                  skip_round(skip, state.v, v))

    return mean_rule(rule, init, server, max_weight)


def fedadagrad(eta: float = 1e-1, eta_l: float = 1e-1, tau: float = 1e-9,
               max_weight: float | None = None) -> Aggregator:
    """FedAdagrad (Flower ``FedAdagrad``): ``m = delta`` (beta_1 is 0), ``v = v + delta^2``."""
    max_weight = _check("fedadagrad", eta, eta_l, 0.0, 0.0, tau, max_weight)
    return _fedopt("fedadagrad", 0.0, lambda v, d: v + d * d, lambda count: eta, tau,
                   max_weight)


def fedadam(eta: float = 1e-1, eta_l: float = 1e-1, beta_1: float = 0.9, beta_2: float = 0.99,
            tau: float = 1e-9, max_weight: float | None = None) -> Aggregator:
    """FedAdam (Flower ``FedAdam``): ``v = beta_2 * v + (1 - beta_2) * delta^2`` and the
    bias-corrected rate ``eta * sqrt(1 - beta_2^(t+1)) / (1 - beta_1^(t+1))`` with Flower's
    1-based ``t = server_round``, i.e. exponent ``count + 2`` (Adam itself would use
    ``count + 1``; reproduced for parity)."""
    max_weight = _check("fedadam", eta, eta_l, beta_1, beta_2, tau, max_weight)

    def learning_rate(count: jax.Array) -> jax.Array:
        t = count.astype(jnp.float32) + 2.0
        return eta * jnp.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)

    return _fedopt("fedadam", beta_1, lambda v, d: beta_2 * v + (1 - beta_2) * d * d,
                   learning_rate, tau, max_weight)


def fedyogi(eta: float = 1e-2, eta_l: float = 0.0316, beta_1: float = 0.9, beta_2: float = 0.99,
            tau: float = 1e-3, max_weight: float | None = None) -> Aggregator:
    """FedYogi (Flower ``FedYogi``): ``v = v - (1 - beta_2) * delta^2 * sign(v - delta^2)``,
    no bias correction."""
    max_weight = _check("fedyogi", eta, eta_l, beta_1, beta_2, tau, max_weight)
    return _fedopt("fedyogi", beta_1,
                   lambda v, d: v - (1 - beta_2) * d * d * jnp.sign(v - d * d),
                   lambda count: eta, tau, max_weight)
