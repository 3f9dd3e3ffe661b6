"""The flax Model component, nnx and linen: training, parameters, deltas, many peers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx

from bbjax.components import flax_model

from bbjax.errors import ComponentError

X = jax.random.normal(jax.random.key(1), (32, 3))
Y = X @ jnp.array([[1.0], [-2.0], [0.5]]) + 0.3


def _mse(prediction, target):
    return jnp.mean((prediction - target) ** 2)


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(3, 8, rngs=rngs)
        self.norm = nnx.BatchNorm(8, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.norm(self.hidden(x))))


class LinenNet(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.BatchNorm(use_running_average=False)(linen.Dense(8)(x))
        return linen.Dense(1)(jax.nn.relu(x))


MODELS = {
    "nnx": flax_model(NnxNet(nnx.Rngs(0)), optax.adam(0.05), _mse),
    "linen": flax_model(LinenNet(), optax.sgd(0.05, momentum=0.9), _mse, example_input=X),
    "linear": flax_model(nnx.Linear(3, 1, rngs=nnx.Rngs(0)), optax.sgd(0.1), _mse),
}


def _jitted(kind, method):
    return jax.jit(functools.partial(MODELS[kind].call, method))


@pytest.mark.parametrize("kind", ["nnx", "linen"])
def test_training_decreases_the_loss_and_updates_batch_stats(kind):
    model = MODELS[kind]
    state = model.init(jax.random.key(0))
    train, loss = _jitted(kind, "train"), _jitted(kind, "loss")
    _, before = loss(state, X, Y)
    start = state
    for _ in range(30):
        state, _ = train(state, X, Y)
    _, after = loss(state, X, Y)
    assert float(after) < 0.2 * float(before)
    changed = jax.tree.map(lambda a, b: bool((a != b).any()), start.extra, state.extra)
    assert all(jax.tree.leaves(changed)) and jax.tree.leaves(changed)


def test_forward_params_load_and_delta_on_a_linear_model():
    model = MODELS["linear"]
    state = model.init(jax.random.key(0))
    _, params = model.call("params", state)
    assert set(params) == {"kernel", "bias"} and params["kernel"].shape == (3, 1)
    new = {"kernel": np.ones((3, 1)), "bias": np.full((1,), 2.0)}  # float64: cast on load
    state, out = _jitted("linear", "load_parameters")(state, new)
    assert out == () and state.params["kernel"].dtype == jnp.float32
    _, y = _jitted("linear", "forward")(state, X)
    np.testing.assert_allclose(y, X.sum(axis=1, keepdims=True) + 2.0, rtol=1e-6)
    delta = {"kernel": jnp.full((3, 1), 0.5), "bias": jnp.ones(1)}
    state, _ = _jitted("linear", "apply_delta")(state, delta)
    np.testing.assert_allclose(state.params["kernel"], np.full((3, 1), 1.5))
    np.testing.assert_allclose(state.params["bias"], [3.0])
    same, value = _jitted("linear", "loss")(state, X, Y)
    jax.tree.map(np.testing.assert_array_equal, same, state)
    np.testing.assert_allclose(value, _mse(1.5 * X.sum(1, keepdims=True) + 3.0, Y), rtol=1e-6)


def test_train_matches_a_hand_written_sgd_step():
    model = MODELS["linear"]
    state = model.init(jax.random.key(0))
    grads = jax.grad(lambda p: _mse(X @ p["kernel"] + p["bias"], Y))(state.params)
    new, value = _jitted("linear", "train")(state, X, Y)
    np.testing.assert_allclose(value, _mse(X @ state.params["kernel"] + state.params["bias"], Y))
    for name in ("kernel", "bias"):
        want = state.params[name] - 0.1 * grads[name]
        np.testing.assert_allclose(new.params[name], want, rtol=1e-5, atol=1e-6)


def test_vmap_trains_many_peers_independently():
    model, peers = MODELS["linen"], 3
    keys = jax.random.split(jax.random.key(0), peers)
    xs = jnp.stack([X + p for p in range(peers)])
    ys = jnp.stack([Y * (p + 1) for p in range(peers)])
    train = _jitted("linen", "train")
    new, losses = jax.jit(jax.vmap(lambda k, x, y: train(model.init(k), x, y)))(keys, xs, ys)
    close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
    init = jax.jit(model.init)
    for p in range(peers):
        alone, value = train(init(keys[p]), xs[p], ys[p])
        close(losses[p], value)
        jax.tree.map(lambda got, want, p=p: close(got[p], want), new.params, alone.params)


def test_every_method_vmaps_over_peers():
    model, peers = MODELS["linear"], 4
    states = jax.vmap(model.init)(jax.random.split(jax.random.key(0), peers))
    bias = jnp.arange(peers, dtype=jnp.float32)[:, None]
    deltas = {"kernel": jnp.ones((peers, 3, 1)), "bias": bias}

    def vcall(method, *args):
        return jax.vmap(functools.partial(model.call, method))(*args)

    states, _ = vcall("load_parameters", states, jax.tree.map(jnp.zeros_like, deltas))
    states, _ = vcall("apply_delta", states, deltas)
    _, params = vcall("params", states)
    jax.tree.map(np.testing.assert_array_equal, params, deltas)
    xs = jnp.broadcast_to(X, (peers, *X.shape))
    _, ys = vcall("forward", states, xs)
    np.testing.assert_allclose(ys, X.sum(1, keepdims=True)[None] + bias[:, None], rtol=1e-6)
    _, losses = vcall("loss", states, xs, ys)
    np.testing.assert_allclose(losses, np.zeros(peers), atol=1e-12)


def test_wrong_parameters_are_component_errors():
    model = MODELS["linear"]
    state = model.init(jax.random.key(0))
    with pytest.raises(ComponentError, match=r"params leaf \['kernel'\] has shape \(1, 3\)") as e:
        model.call("load_parameters", state, {"kernel": jnp.ones((1, 3)), "bias": jnp.ones(1)})
    assert e.value.method == "load_parameters" and e.value.role == "model"
    with pytest.raises(ComponentError, match="delta has tree structure") as e:
        model.call("apply_delta", state, {"kernel": jnp.ones((3, 1))})
    assert e.value.method == "apply_delta"


def test_bad_modules():
    with pytest.raises(ComponentError, match="needs example_input"):
        flax_model(LinenNet(), optax.sgd(0.1), _mse)
    with pytest.raises(ComponentError, match="only for linen"):
        flax_model(nnx.Linear(1, 1, rngs=nnx.Rngs(0)), optax.sgd(0.1), _mse, example_input=X)
    with pytest.raises(ComponentError, match="expected a flax nnx or linen module, got function"):
        flax_model(lambda x: x, optax.sgd(0.1), _mse)
