"""A Model from a flax module (nnx or linen), an optax optimizer and a loss.

The state holds the trainable parameters and the module's other state (batch statistics,
RNG counters) as plain nested dicts of arrays, plus the optimizer's state. The module runs
in the mode it is given in (e.g. an nnx module after ``.train()`` or ``.eval()``, a linen
module's fixed attributes); linen modules that need ``rngs`` in ``apply`` are not supported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import linen, nnx, struct

from bbjax.components.component import Component, PyTree
from bbjax.errors import ComponentError
from bbjax.components.roles import Role
from bbjax.components.tree_checks import cast_like, spec_of

Apply = Callable[[PyTree, PyTree, Any], tuple[Any, PyTree]]


@struct.dataclass
class ModelState:
    """Parameters, the module's other state and the optimizer's state."""

    params: PyTree  # nested dict of the trainable parameters
    extra: PyTree  # nested dict of the module's other state ({} when none)
    opt_state: optax.OptState


def flax_model(
    module: nnx.Module | linen.Module,
    optimizer: optax.GradientTransformation,
    loss_fn: Callable[[Any, Any], jax.Array],
    example_input: Any = None,
    name: str = "flax_model",
) -> Component:
    """A Model with all six contract methods over ``module``.

    ``loss_fn(prediction, target)`` returns a scalar. An nnx ``module`` is already
    initialized: ``init(key)`` ignores ``key`` and returns its current state. A linen
    ``module`` needs ``example_input``: ``init(key)`` runs ``module.init(key,
    example_input)``. Methods: ``forward(state, x) -> (state, y)`` (updates the module's
    other state, e.g. batch statistics), ``params(state) -> (state, params)``,
    ``load_parameters(state, params)`` and ``apply_delta(state, delta)`` (the optimizer
    state is kept; leaves are cast to the parameters' dtypes), ``loss(state, x, y) ->
    (state, loss)`` (the state is unchanged), ``train(state, x, y) -> (state, loss)``
    (one optimizer step; the loss before it). Raises :class:`ComponentError` for an
    unsupported module, a missing or superfluous ``example_input``, or, when traced,
    parameters or a delta whose structure or shapes differ from the model's.
    """
    role = Role.MODEL.value
    if isinstance(module, nnx.Module):
        if example_input is not None:
            raise ComponentError(
                "example_input is only for linen modules", component=name, role=role
            )
        init_vars, apply = _nnx(module)
    elif isinstance(module, linen.Module):
        if example_input is None:
            raise ComponentError(
                "a linen module needs example_input to initialize", component=name, role=role
            )
        init_vars, apply = _linen(module, example_input)
    else:
        raise ComponentError(
            f"expected a flax nnx or linen module, got {type(module).__name__}",
            component=name,
            role=role,
        )

    def init(key: jax.Array) -> ModelState:
        params, extra = init_vars(key)
        return ModelState(params=params, extra=extra, opt_state=optimizer.init(params))

    def like_params(state: ModelState, tree: PyTree, what: str, method: str) -> PyTree:
        spec = spec_of(state.params)
        return cast_like(spec, tree, what, component=name, role=role, method=method)

    def forward(state: ModelState, x: Any) -> tuple[ModelState, Any]:
        y, extra = apply(state.params, state.extra, x)
        return state.replace(extra=extra), y

    def params(state: ModelState) -> tuple[ModelState, PyTree]:
        return state, state.params

    def load_parameters(state: ModelState, params: PyTree) -> tuple[ModelState, tuple[()]]:
        return state.replace(params=like_params(state, params, "params", "load_parameters")), ()

    def apply_delta(state: ModelState, delta: PyTree) -> tuple[ModelState, tuple[()]]:
        delta = like_params(state, delta, "delta", "apply_delta")
        return state.replace(params=jax.tree.map(lambda p, d: p + d, state.params, delta)), ()

    def loss(state: ModelState, x: Any, y: Any) -> tuple[ModelState, jax.Array]:
        prediction, _ = apply(state.params, state.extra, x)
        return state, loss_fn(prediction, y)

    def train(state: ModelState, x: Any, y: Any) -> tuple[ModelState, jax.Array]:
        def objective(params: PyTree) -> tuple[jax.Array, PyTree]:
            prediction, extra = apply(params, state.extra, x)
            return loss_fn(prediction, y), extra

        (value, extra), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new = ModelState(optax.apply_updates(state.params, updates), extra, opt_state)
        return new, value

    methods = {
        "forward": forward,
        "params": params,
        "load_parameters": load_parameters,
        "apply_delta": apply_delta,
        "loss": loss,
        "train": train,
    }
    return Component(Role.MODEL, init, methods, name)


def _nnx(module: nnx.Module) -> tuple[Callable[[jax.Array], tuple[PyTree, PyTree]], Apply]:
    graphdef, params, extra = nnx.split(module, nnx.Param, ...)
    params, extra = nnx.to_pure_dict(params), nnx.to_pure_dict(extra)

    def init_vars(key: jax.Array) -> tuple[PyTree, PyTree]:
        return params, extra

    def apply(params: PyTree, extra: PyTree, x: Any) -> tuple[Any, PyTree]:
        model = nnx.merge(graphdef, params, extra)
        y = model(x)
        _, _, new_extra = nnx.split(model, nnx.Param, ...)
        return y, nnx.to_pure_dict(new_extra)

    return init_vars, apply


def _linen(
    module: linen.Module, example_input: Any
) -> tuple[Callable[[jax.Array], tuple[PyTree, PyTree]], Apply]:
    def init_vars(key: jax.Array) -> tuple[PyTree, PyTree]:
        variables = dict(module.init(key, example_input))
        params = variables.pop("params", {})
        return params, variables

    def apply(params: PyTree, extra: PyTree, x: Any) -> tuple[Any, PyTree]:
        if not extra:
            return module.apply({"params": params}, x), extra
        y, updated = module.apply({"params": params, **extra}, x, mutable=list(extra))
        return y, {**extra, **updated}

    return init_vars, apply
