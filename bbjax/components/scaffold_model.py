"""SCAFFOLD's client side as a Model (Karimireddy et al. 2020, Algorithm 1, option II).

Training takes SGD steps on the corrected gradient ``g - c_i + c``: an optax transformation
chained before ``optax.sgd(learning_rate)`` holds the client's control variate ``c_i``, the
server's ``c`` (set by ``load_control``), the round's global parameters (anchored by
``load_parameters``) and the number of steps since. ``control_update`` then sets
``c_i+ = c_i - c + (x_global - y_i) / (steps * learning_rate)`` and returns ``c_i+ - c_i``,
the delta the server's ``bbjax.aggregators.scaffold`` rule averages into ``c``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from bbjax.aggregators.scaffold import scaffold_control_update, scaffold_gradient
from bbjax.components.component import Component, PyTree
from bbjax.errors import ComponentError
from bbjax.components.flax_model import flax_model
from bbjax.components.roles import Role


class ControlState(NamedTuple):
    client_control: PyTree  # c_i
    server_control: PyTree  # c
    anchor: PyTree  # the round's global parameters
    steps: jax.Array  # int32, local steps since the anchor


def control_correction() -> optax.GradientTransformation:
    """Replace the gradient ``g`` by ``g - c_i + c`` and count the steps."""

    def init(params: PyTree) -> ControlState:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return ControlState(zeros, zeros, params, jnp.int32(0))

    def update(updates, state, params=None):
        corrected = scaffold_gradient(updates, state.client_control, state.server_control)
        return corrected, state._replace(steps=state.steps + 1)

    return optax.GradientTransformation(init, update)


def scaffold_model(module: Any, learning_rate: float, loss_fn: Callable[[Any, Any], Any],
                   example_input: Any = None, name: str = "scaffold_model") -> Component:
    """A :func:`flax_model` trained by SCAFFOLD's corrected SGD, with ``load_control(c)``
    and ``control_update() -> delta``. Raises :class:`ComponentError` unless
    ``learning_rate > 0``."""
    if not learning_rate > 0:
        raise ComponentError(f"learning_rate must be > 0, got {learning_rate!r}",
                             component=name, role=Role.MODEL.value)
    inner = flax_model(module, optax.chain(control_correction(), optax.sgd(learning_rate)),
                       loss_fn, example_input, name)

    def controls(state) -> ControlState:
        return state.opt_state[0]

    def with_controls(state, new: ControlState):
        return state.replace(opt_state=(new, *state.opt_state[1:]))

    def load_parameters(state, params):
        state, outputs = inner.methods["load_parameters"](state, params)
        return with_controls(state, controls(state)._replace(anchor=state.params,
                                                            steps=jnp.int32(0))), outputs

    def load_control(state, control):
        like = jax.tree.map(lambda c, p: jnp.asarray(c, p.dtype).reshape(p.shape), control,
                            state.params)
        return with_controls(state, controls(state)._replace(server_control=like)), ()

    def control_update(state):
        c = controls(state)
        steps = jnp.maximum(c.steps, 1).astype(jnp.float32)
        new, delta = scaffold_control_update(c.client_control, c.server_control, c.anchor,
                                             state.params, 1, steps * learning_rate)
        return with_controls(state, c._replace(client_control=new)), delta

    return Component(Role.MODEL, inner.init, {**inner.methods, "load_parameters": load_parameters,
                                              "load_control": load_control,
                                              "control_update": control_update}, name,
                     config={"learning_rate": float(learning_rate)})
