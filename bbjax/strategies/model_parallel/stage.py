"""One pipeline stage as a Protocol component: its parameters, its optimizer, the inputs of
the round's micro-batches and the gradient it accumulates over them.

The backward pass **recomputes**: ``forward`` keeps only the stage's input of micro-batch
``m``, and ``backward`` runs the stage's apply again under :func:`jax.vjp` at that input
(GPipe's re-materialization), so a stage holds ``M`` inputs, not its residuals. The
gradient of the mean loss over a batch of ``M`` equal micro-batches is the mean of the
micro-batches' gradients; ``apply`` takes one optimizer step with it and starts the next
round's accumulation from zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from bbjax._checks import check_count
from bbjax.components import Component, Role
from bbjax.errors import ComponentError, InvalidArgument

PyTree = Any


def micro_batch(m: int, micro_batches: int) -> jax.Array:
    """Micro-batch ``m`` of ``micro_batches`` as the stage methods name it: a bool
    ``[micro_batches]`` mask, true at ``m``."""
    return jnp.arange(micro_batches) == m


@struct.dataclass
class StageState:
    """Parameters, optimizer state, the saved inputs ``[M, ...]`` and the gradient summed
    over the micro-batches done so far, with their count."""

    params: PyTree
    opt_state: optax.OptState
    inputs: jax.Array
    grads: PyTree
    count: jax.Array  # float32: micro-batches accumulated since the last apply


def stage(apply: Callable[[PyTree, Any], Any], params: PyTree,
          optimizer: optax.GradientTransformation, input_spec: Any, micro_batches: int = 1,
          loss_fn: Callable[[Any, Any], jax.Array] | None = None,
          name: str = "stage") -> Component:
    """A Protocol component over ``apply(params, x) -> y`` starting from ``params``, whose
    micro-batch input is ``input_spec`` (an array or ``ShapeDtypeStruct``).

    ``micro`` below names a micro-batch as a bool ``[micro_batches]`` mask, true at its
    index (:func:`micro_batch`), so that a round of another micro-batch count fails when it
    is traced instead of reading the wrong input. ``init(key)`` ignores ``key``. Methods:
    ``params() -> params``; ``forward(x, micro) -> y``: ``apply`` at ``x``, kept as that
    micro-batch's input; ``backward(g_out, micro) -> g_in``: the vector-Jacobian product
    of ``apply`` at that micro-batch's saved input with ``g_out``, adding the parameters'
    part to the accumulated gradient and returning the input's; with ``loss_fn(prediction,
    target)`` (the mean loss of a batch, as for :func:`bbjax.components.flax_model`),
    ``loss_backward(x, target, micro) -> (g_in, loss)``: the loss of micro-batch ``x`` and
    its gradient with respect to ``x``, accumulating the parameters' gradient; ``apply() ->
    ()``: one optimizer step with the mean of the accumulated gradients (nothing when none
    was accumulated), then zero them. Raises :class:`InvalidArgument` for a
    ``micro_batches`` that is not an integer >= 1; its methods raise
    :class:`ComponentError` for an ``x`` of another shape than ``input_spec`` or a
    ``micro`` that is not a ``[micro_batches]`` mask.
    """
    micro_batches = check_count("micro_batches", micro_batches)
    if not callable(apply):
        raise InvalidArgument(f"stage {name!r}: apply is not callable")
    spec = jax.ShapeDtypeStruct(jnp.shape(input_spec), jnp.result_type(input_spec))
    params0 = jax.tree.map(jnp.asarray, params)

    def init(key: jax.Array) -> StageState:
        del key
        return StageState(params0, optimizer.init(params0),
                          jnp.zeros((micro_batches, *spec.shape), spec.dtype),
                          jax.tree.map(jnp.zeros_like, params0), jnp.float32(0))

    def read(state: StageState) -> tuple[StageState, PyTree]:
        return state, state.params

    def accumulate(state: StageState, grads: PyTree) -> StageState:
        return state.replace(grads=jax.tree.map(jnp.add, state.grads, grads),
                             count=state.count + 1)

    def index(micro: Any, method: str) -> jax.Array:
        if jnp.shape(micro) != (micro_batches,) or jnp.result_type(micro) != jnp.bool_:
            raise ComponentError(f"micro must be a bool [{micro_batches}] mask (this stage "
                                 f"holds {micro_batches} micro-batches), got "
                                 f"{jnp.result_type(micro)}{list(jnp.shape(micro))}",
                                 component=name, role=Role.PROTOCOL.value, method=method)
        return jnp.argmax(micro)

    def checked(x: Any, method: str) -> jax.Array:
        if jnp.shape(x) != spec.shape:
            raise ComponentError(f"x must have the stage's input shape {list(spec.shape)}, "
                                 f"got {list(jnp.shape(x))}", component=name,
                                 role=Role.PROTOCOL.value, method=method)
        return jnp.asarray(x, spec.dtype)

    def forward(state: StageState, x: Any, micro: Any) -> tuple[StageState, Any]:
        x = checked(x, "forward")
        inputs = state.inputs.at[index(micro, "forward")].set(x)
        return state.replace(inputs=inputs), apply(state.params, x)

    def backward(state: StageState, g_out: Any, micro: Any) -> tuple[StageState, Any]:
        x = state.inputs[index(micro, "backward")]
        _, vjp = jax.vjp(apply, state.params, x)
        g_params, g_in = vjp(g_out)
        return accumulate(state, g_params), g_in

    def loss_backward(state: StageState, x: Any, target: Any, micro: Any
                      ) -> tuple[StageState, tuple[Any, jax.Array]]:
        index(micro, "loss_backward")  # the last stage differentiates at once: no input kept
        x = checked(x, "loss_backward")
        loss, (g_params, g_in) = jax.value_and_grad(
            lambda p, a: loss_fn(apply(p, a), target), argnums=(0, 1))(state.params, x)
        return accumulate(state, g_params), (g_in, loss)

    def step(state: StageState) -> tuple[StageState, tuple[()]]:
        mean = jax.tree.map(lambda g: g / jnp.maximum(state.count, 1).astype(g.dtype),
                            state.grads)
        updates, opt_state = optimizer.update(mean, state.opt_state, state.params)
        stepped = state.replace(params=optax.apply_updates(state.params, updates),
                                opt_state=opt_state)
        stepped = jax.tree.map(lambda new, old: jnp.where(state.count > 0, new, old),
                               stepped, state)
        return stepped.replace(grads=jax.tree.map(jnp.zeros_like, state.grads),
                               count=jnp.float32(0)), ()

    methods = {"params": read, "forward": forward, "backward": backward, "apply": step}
    if loss_fn is not None:
        methods["loss_backward"] = loss_backward
    return Component(Role.PROTOCOL, init, methods, name,
                     config={"micro_batches": micro_batches,
                             "input": [list(spec.shape), str(spec.dtype)],
                             "last": loss_fn is not None})
