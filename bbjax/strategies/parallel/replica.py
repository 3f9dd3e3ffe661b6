"""A model replica for data-parallel training: parameters and an optimizer whose gradient
and update are separate methods, so that the gradients can be combined between them.

The Model role's contract fuses the two (``train`` is one optimizer step), so a replica is
a Protocol component. ``gradient(x, y, count)`` differentiates the mean loss over the first
``count`` rows of a padded batch: replicas with shards of unequal size share one batch
shape, and the rows past ``count`` count for nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from bbjax.components import Component, Role
from bbjax.components.tree_checks import cast_like, spec_of
from bbjax.errors import ComponentError

PyTree = Any


@struct.dataclass
class ReplicaState:
    """Parameters, the module's other state (``{}`` when none) and the optimizer's state."""

    params: PyTree
    extra: PyTree
    opt_state: optax.OptState


def replica(module: nnx.Module, optimizer: optax.GradientTransformation,
            loss_fn: Callable[[Any, Any], jax.Array], name: str = "replica") -> Component:
    """A Protocol component over an initialized flax nnx ``module``.

    ``loss_fn(prediction, target)`` is the mean loss of a batch (as for
    :func:`bbjax.components.flax_model`); it is applied to one row at a time to mask rows.
    ``init(key)`` ignores ``key``: every replica starts from ``module``'s parameters.
    Methods: ``params() -> params``; ``load_parameters(params) -> ()``;
    ``gradient(x, y, count) -> (grads, loss, count)``: the gradient and value of the mean
    loss over rows ``[0, count)`` of the batch (zero when ``count`` is 0), and ``count``
    as int32; ``apply_gradients(grads, take) -> ()``: one optimizer step with ``grads``
    where the bool ``take`` is true, nothing (optimizer state included) where it is false.
    Raises :class:`ComponentError` for a module that is not an nnx module, or, when
    traced, parameters or gradients of another structure or shape than the model's.
    """
    role = Role.PROTOCOL.value
    if not isinstance(module, nnx.Module):
        raise ComponentError(f"expected a flax nnx module, got {type(module).__name__}",
                             component=name, role=role)
    graphdef, params0, extra0 = nnx.split(module, nnx.Param, ...)
    params0, extra0 = nnx.to_pure_dict(params0), nnx.to_pure_dict(extra0)

    def apply(params: PyTree, extra: PyTree, x: Any) -> tuple[Any, PyTree]:
        model = nnx.merge(graphdef, params, extra)
        y = model(x)
        return y, nnx.to_pure_dict(nnx.split(model, nnx.Param, ...)[2])

    def like_params(state: ReplicaState, tree: PyTree, what: str, method: str) -> PyTree:
        return cast_like(spec_of(state.params), tree, what, component=name, role=role,
                         method=method)

    def init(key: jax.Array) -> ReplicaState:
        del key
        return ReplicaState(params0, extra0, optimizer.init(params0))

    def params(state: ReplicaState) -> tuple[ReplicaState, PyTree]:
        return state, state.params

    def load_parameters(state: ReplicaState, new: PyTree) -> tuple[ReplicaState, tuple[()]]:
        return state.replace(params=like_params(state, new, "params", "load_parameters")), ()

    def gradient(state: ReplicaState, x: Any, y: Any, count: Any
                 ) -> tuple[ReplicaState, tuple[PyTree, jax.Array, jax.Array]]:
        count = jnp.asarray(count, jnp.int32)

        def objective(p: PyTree) -> tuple[jax.Array, PyTree]:
            prediction, extra = apply(p, state.extra, x)
            rows = jax.vmap(lambda a, b: loss_fn(a[None], b[None]))(prediction, y)
            real = jnp.arange(rows.shape[0]) < count
            total = jnp.sum(jnp.where(real, rows, 0.0))
            return total / jnp.maximum(count, 1).astype(total.dtype), extra

        (value, extra), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        return state.replace(extra=extra), (grads, value, count)

    def apply_gradients(state: ReplicaState, grads: PyTree, take: Any
                        ) -> tuple[ReplicaState, tuple[()]]:
        grads = like_params(state, grads, "grads", "apply_gradients")
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        stepped = state.replace(params=optax.apply_updates(state.params, updates),
                                opt_state=opt_state)
        take = jnp.asarray(take, bool)
        return jax.tree.map(lambda new, old: jnp.where(take, new, old), stepped, state), ()

    methods = {"params": params, "load_parameters": load_parameters, "gradient": gradient,
               "apply_gradients": apply_gradients}
    return Component(Role.PROTOCOL, init, methods, name)
