"""scaffold_model: SGD on the corrected gradient, and option II's control update."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bbjax.components import flax_model, scaffold_model

from bbjax.errors import ComponentError
from bbjax.models import LogisticRegression


def linear() -> LogisticRegression:
    return LogisticRegression(4, 3, rngs=nnx.Rngs(0))


def mse(prediction, target):
    return jnp.mean((prediction - target) ** 2)


def test_train_steps_on_the_corrected_gradient_and_control_update_is_option_two():
    rng = np.random.default_rng(0)
    lr = 0.1
    model = scaffold_model(linear(), lr, mse)
    plain = flax_model(linear(), optax.sgd(lr), mse)
    state = model.init(jax.random.PRNGKey(0))
    start = state.params
    c_i = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), start)
    c = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), start)
    state = state.replace(opt_state=(state.opt_state[0]._replace(client_control=c_i),
                                     *state.opt_state[1:]))
    state, () = model.call("load_parameters", state, start)
    state, () = model.call("load_control", state, c)
    x = rng.normal(size=(8, 4)).astype(np.float32)
    y = rng.normal(size=(8, 3)).astype(np.float32)
    want = start
    for _ in range(3):
        state, _ = model.call("train", state, x, y)
        grads = jax.grad(lambda p: mse(plain.call("forward", plain.init(None).replace(params=p),
                                                  x)[1], y))(want)
        want = jax.tree.map(lambda p, g, ci, cc: p - lr * (g - ci + cc), want, grads, c_i, c)
    chex.assert_trees_all_close(state.params, want, rtol=1e-5, atol=1e-6)
    state, delta = model.call("control_update", state)
    new_c_i = jax.tree.map(lambda ci, cc, x0, y0: ci - cc + (x0 - y0) / (3 * lr),
                           c_i, c, start, want)
    chex.assert_trees_all_close(state.opt_state[0].client_control, new_c_i, rtol=1e-4,
                                atol=1e-5)
    chex.assert_trees_all_close(delta, jax.tree.map(jnp.subtract, new_c_i, c_i), rtol=1e-4,
                                atol=1e-5)


def test_load_parameters_restarts_the_step_count():
    model = scaffold_model(linear(), 0.1, mse)
    state = model.init(jax.random.PRNGKey(0))
    state, _ = model.call("train", state, jnp.ones((2, 4)), jnp.zeros((2, 3)))
    assert int(state.opt_state[0].steps) == 1
    state, () = model.call("load_parameters", state, state.params)
    assert int(state.opt_state[0].steps) == 0


def test_learning_rate_must_be_positive():
    with pytest.raises(ComponentError, match="learning_rate must be > 0"):
        scaffold_model(linear(), 0.0, mse)
