"""FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks"): the client
objective. Its server side is :func:`bbjax.aggregators.fedavg`, as in Flower, whose
``FedProx`` strategy only forwards ``proximal_mu`` to the clients."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from bbjax.aggregators.base import Params, require


def fedprox(loss_fn: Callable[..., jax.Array], proximal_mu: float) -> Callable[..., jax.Array]:
    """Wrap ``loss_fn(params, *args, **kwargs) -> scalar`` into the proximal objective
    ``(params, global_params, *args, **kwargs) -> loss_fn(params, ...) +
    proximal_mu / 2 * ||params - global_params||^2`` (squared L2 over all leaves)."""
    require(proximal_mu >= 0, f"fedprox: proximal_mu must be >= 0, got {proximal_mu!r}")

    def proximal_loss(params: Params, global_params: Params, *args: Any, **kwargs: Any
                      ) -> jax.Array:
        sq = jax.tree.map(lambda p, g: jnp.sum(jnp.square(p - jax.lax.stop_gradient(g))),
                          params, global_params)
        return loss_fn(params, *args, **kwargs) + proximal_mu / 2 * sum(jax.tree.leaves(sq))

    return proximal_loss
