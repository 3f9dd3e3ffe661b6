"""SCAFFOLD (Karimireddy et al. 2020, "Stochastic Controlled Averaging for Federated
Learning"): server rule and client side, with the paper's control-variate update option II.

Round protocol: the server sends ``global_params`` and ``state.control`` (``c``); client
``i`` holding control variate ``c_i`` runs ``K`` local steps on
``scaffold_gradient(grads, c_i, c)``, then calls ``scaffold_control_update`` and returns its
parameters and control delta; the server calls ``aggregate(..., control_deltas=...)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bbjax.aggregators.base import (Aggregator, Cohort, Params, Reduced, aggregation_rule,
                                    check_max_weight, check_stacked, count, finite_clients,
                                    leafwise, mean_coefficients, plus, require, skip_round)
from bbjax.aggregators.columns import client_sum


class ScaffoldState(NamedTuple):
    """The server control variate ``c``, zero before the first round."""

    control: Params


def scaffold(server_learning_rate: float = 1.0, num_clients: int | None = None,
             max_weight: float | None = None) -> Aggregator:
    """SCAFFOLD server rule.

    ``aggregate`` takes the clients' control deltas ``c_i+ - c_i`` (stacked like
    ``client_params``) as the keyword ``control_deltas`` and computes
    ``global = global + server_learning_rate * sum_i p_i (client_i - global)`` with ``p``
    the present clients' ``weights`` normalised to sum to one (equal weights give the
    paper's plain mean), and ``c = c + sum_i control_delta_i / N`` over the present clients,
    where ``N = num_clients`` (the population size) or, when None, the number present.
    A client with a non-finite control delta is rejected too
    (:mod:`bbjax.aggregators.base`).
    """
    require(server_learning_rate > 0,
            f"scaffold: server_learning_rate must be > 0, got {server_learning_rate!r}")
    require(num_clients is None or (isinstance(num_clients, int) and num_clients > 0),
            f"scaffold: num_clients must be a positive int or None, got {num_clients!r}")
    max_weight = check_max_weight("scaffold", max_weight)

    def init(global_params: Params) -> ScaffoldState:
        return ScaffoldState(jax.tree.map(jnp.zeros_like, global_params))

    def reduce(state: ScaffoldState, cohort: Cohort, params: Params, stack: Params,
               origin: Params | None, control_deltas: Params = None) -> Reduced:
        require(control_deltas is not None,
                "scaffold needs the clients' control deltas (control_deltas=...)")
        n = check_stacked("scaffold", params, control_deltas, "control_deltas")
        require(n == cohort.n, f"scaffold: control_deltas stacks {n} clients, the updates "
                f"stack {cohort.n}")
        present = cohort.present & finite_clients(control_deltas)
        coef, skip = mean_coefficients(cohort.weights, present)
        step = leafwise(lambda x, g: server_learning_rate * client_sum(coef, x, present, g),
                        stack, origin)
        population = num_clients if num_clients is not None else jnp.maximum(count(present), 1)
        ones = jnp.ones_like(cohort.weights) / population
        control = jax.tree.map(lambda c, d: c + client_sum(ones, d, present),
                               state.control, control_deltas)
        return Reduced(plus(origin, step),
                       ScaffoldState(skip_round(skip, state.control, control)), present, skip)

    return aggregation_rule("scaffold", init, reduce, max_weight, inputs=("control_deltas",))


def scaffold_gradient(grads: Params, client_control: Params, server_control: Params) -> Params:
    """The corrected local gradient ``grads - c_i + c``."""
    return jax.tree.map(lambda g, ci, c: g - ci + c, grads, client_control, server_control)


def scaffold_control_update(client_control: Params, server_control: Params,
                            global_params: Params, local_params: Params, num_steps: int,
                            learning_rate: float) -> tuple[Params, Params]:
    """Option II of the paper after ``num_steps`` local steps of size ``learning_rate``.

    Returns ``(c_i+, c_i+ - c_i)`` with
    ``c_i+ = c_i - c + (global_params - local_params) / (num_steps * learning_rate)``.
    """
    scale = 1.0 / (num_steps * learning_rate)
    new = jax.tree.map(lambda ci, c, x, y: ci - c + (x - y) * scale,
                       client_control, server_control, global_params, local_params)
    return new, jax.tree.map(jnp.subtract, new, client_control)
