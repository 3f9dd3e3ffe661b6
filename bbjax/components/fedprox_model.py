"""FedProx's client side as a Model: training minimizes ``loss + μ/2‖w − w_g‖²``.

``w_g`` is the anchor: the parameters last given to ``load_parameters`` (the round's global
model). The proximal gradient ``μ(w − w_g)`` is added to the loss gradient by an optax
transformation chained before the optimizer, whose state holds the anchor, so any optax
optimizer sees exactly the gradient of the proximal objective (Li et al. 2020, eq. 2).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import optax

from bbjax.components.component import Component, PyTree
from bbjax.errors import ComponentError
from bbjax.components.flax_model import flax_model
from bbjax.components.roles import Role


class ProximalState(NamedTuple):
    anchor: PyTree


def proximal_term(mu: float) -> optax.GradientTransformation:
    """Add ``mu * (params - anchor)`` to the gradient; ``init`` anchors at the initial params."""

    def init(params: PyTree) -> ProximalState:
        return ProximalState(params)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("proximal_term needs params in update()")
        updates = jax.tree.map(lambda g, p, a: g + mu * (p - a), updates, params, state.anchor)
        return updates, state

    return optax.GradientTransformation(init, update)


def fedprox_model(module: Any, optimizer: optax.GradientTransformation,
                  loss_fn: Callable[[Any, Any], Any], proximal_mu: float,
                  example_input: Any = None, name: str = "fedprox_model") -> Component:
    """A :func:`flax_model` whose ``train`` minimizes the FedProx objective."""
    if not proximal_mu >= 0:
        raise ComponentError(f"proximal_mu must be >= 0, got {proximal_mu!r}", component=name,
                             role=Role.MODEL.value)
    inner = flax_model(module, optax.chain(proximal_term(proximal_mu), optimizer), loss_fn,
                       example_input, name)

    def load_parameters(state, params):
        state, outputs = inner.methods["load_parameters"](state, params)
        anchored = (ProximalState(state.params), *state.opt_state[1:])
        return state.replace(opt_state=anchored), outputs

    return Component(Role.MODEL, inner.init, {**inner.methods,
                                              "load_parameters": load_parameters}, name,
                     config={"proximal_mu": float(proximal_mu)})
