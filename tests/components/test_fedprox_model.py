"""The FedProx Model trains on the proximal objective, anchored at the loaded parameters."""

from __future__ import annotations

import chex
import jax
import numpy as np
import optax
import pytest
from flax import nnx

from bbjax.aggregators import fedprox
from bbjax.components import fedprox_model, flax_model
from bbjax.errors import ComponentError
from bbjax.models import LogisticRegression, cross_entropy


def net() -> LogisticRegression:
    return LogisticRegression(5, 3, rngs=nnx.Rngs(0))


def test_two_steps_match_gradient_descent_on_the_proximal_objective():
    mu, lr = 0.5, 0.1
    component = fedprox_model(net(), optax.sgd(lr), cross_entropy, proximal_mu=mu)
    plain = flax_model(net(), optax.sgd(lr), cross_entropy)
    r = np.random.default_rng(0)
    x, y = r.normal(size=(8, 5)).astype(np.float32), r.integers(0, 3, 8).astype(np.int32)
    state = component.init(jax.random.PRNGKey(0))
    global_params = jax.tree.map(lambda p: p + 0.3, state.params)
    state, _ = component.call("load_parameters", state, global_params)
    for _ in range(2):
        state, _ = component.call("train", state, x, y)

    def data_loss(params):  # independent reference: bbjax.aggregators.fedprox's objective
        return plain.call("loss", plain.init(jax.random.PRNGKey(0)).replace(params=params),
                          x, y)[1]

    objective = fedprox(data_loss, mu)
    want = global_params
    for _ in range(2):
        grads = jax.grad(objective)(want, global_params)
        want = jax.tree.map(lambda p, g: p - lr * g, want, grads)
    chex.assert_trees_all_close(state.params, want, rtol=1e-5, atol=1e-6)


def test_mu_zero_is_plain_training_and_negative_mu_is_rejected():
    r = np.random.default_rng(1)
    x, y = r.normal(size=(8, 5)).astype(np.float32), r.integers(0, 3, 8).astype(np.int32)
    prox = fedprox_model(net(), optax.adam(1e-2), cross_entropy, proximal_mu=0.0)
    plain = flax_model(net(), optax.adam(1e-2), cross_entropy)
    a, b = prox.init(jax.random.PRNGKey(0)), plain.init(jax.random.PRNGKey(0))
    for _ in range(3):
        a, _ = prox.call("train", a, x, y)
        b, _ = plain.call("train", b, x, y)
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-6)
    with pytest.raises(ComponentError, match="proximal_mu"):
        fedprox_model(net(), optax.sgd(0.1), cross_entropy, proximal_mu=-1.0)
