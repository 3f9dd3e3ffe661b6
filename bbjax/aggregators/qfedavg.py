"""q-FedAvg (Li et al. 2020, "Fair Resource Allocation in Federated Learning"), as Flower's
``QFedAvg`` strategy computes it."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from bbjax.aggregators.base import (Aggregator, Cohort, Params, Reduced, aggregation_rule,
                                    check_max_weight, leafwise, plus, require)
from bbjax.algorithms.base import EmptyState
from bbjax.aggregators.columns import client_sum, sq_distances_to


def qfedavg(q: float = 0.2, learning_rate: float = 0.1,
            max_weight: float | None = None) -> Aggregator:
    """q-FedAvg (Flower ``QFedAvg(q_param, qffl_learning_rate)``).

    ``aggregate`` takes the clients' losses at the global model as the keyword ``losses``
    (``[n]``, or a scalar shared by all: Flower passes its server-side evaluation loss).
    With ``F_i = losses_i + 1e-10`` and ``g_i = (global - client_i) / learning_rate``:
    ``h_i = q F_i^(q-1) ||g_i||^2 + F_i^q / learning_rate`` and
    ``global = global - sum_i F_i^q g_i / sum_i h_i``. ``weights`` only decide rejection
    (:mod:`bbjax.aggregators.base`); a client with a non-finite loss is rejected too.
    """
    require(q >= 0, f"qfedavg: q must be >= 0, got {q!r}")
    require(learning_rate > 0, f"qfedavg: learning_rate must be > 0, got {learning_rate!r}")
    max_weight = check_max_weight("qfedavg", max_weight)

    def init(global_params: Params) -> EmptyState:
        return EmptyState()

    def reduce(state: EmptyState, cohort: Cohort, params: Params, stack: Params,
               origin: Params | None, losses: Any = None) -> Reduced:
        require(losses is not None, "qfedavg needs the clients' losses (losses=...)")
        n = cohort.n
        losses = jnp.asarray(losses)
        require(losses.shape in ((), (n,)),
                f"qfedavg: losses has shape {losses.shape}, expected () or ({n},)")
        losses = jnp.broadcast_to(losses.astype(jnp.promote_types(losses.dtype, jnp.float32)),
                                  (n,))
        present = cohort.present & jnp.isfinite(losses)
        f = jnp.where(present, losses, 1.0) + 1e-10
        sq_norm = (sum(jax.tree.leaves(leafwise(sq_distances_to, stack, origin)))
                   / learning_rate ** 2)
        h = q * f ** (q - 1) * sq_norm + f ** q / learning_rate
        h_total = jnp.sum(jnp.where(present, h, 0))
        skip = ~(h_total > 0)
        coef = f ** q / (learning_rate * jnp.where(skip, 1, h_total))
        step = leafwise(lambda x, g: client_sum(coef, x, present, g), stack, origin)
        return Reduced(plus(origin, step), state, present, skip)

    return aggregation_rule("qfedavg", init, reduce, max_weight, inputs=("losses",))
