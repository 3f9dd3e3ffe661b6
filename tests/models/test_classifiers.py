"""The model zoo against float64 numpy: forward passes, the loss, shape checks, training."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from bbjax.components import flax_model
from bbjax.errors import InvalidArgument
from bbjax.models import CNN, MLP, LogisticRegression, cross_entropy


def _params(module: nnx.Module) -> dict:
    """The module's parameters as nested dicts of float64 arrays."""
    state = nnx.to_pure_dict(nnx.state(module, nnx.Param))
    return jax.tree.map(lambda a: np.asarray(a, np.float64), state)


def _forward(module: nnx.Module, x: np.ndarray) -> np.ndarray:
    """``module(x)``, jitted (one compilation rather than one per eager op)."""
    graphdef, state = nnx.split(module)
    return np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x))


def _dense(p: dict, x: np.ndarray) -> np.ndarray:
    return x @ p["kernel"] + p["bias"]


def _conv_same_3x3(x: np.ndarray, p: dict) -> np.ndarray:
    """Cross-correlation of ``x`` [b, h, w, c] with a [3, 3, c, o] kernel, zero padding 1."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]
    out = np.zeros((*x.shape[:3], p["kernel"].shape[-1]))
    for di in range(3):
        for dj in range(3):
            out += padded[:, di:di + h, dj:dj + w, :] @ p["kernel"][di, dj]
    return out + p["bias"]


def _max_pool_2x2(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    x = x[:, :h, :w]
    return x.reshape(x.shape[0], h // 2, 2, w // 2, 2, x.shape[3]).max(axis=(2, 4))


def test_logistic_regression_is_one_affine_map():
    rng = np.random.default_rng()
    features, classes = rng.integers(1, 9), rng.integers(2, 6)
    model = LogisticRegression(features, classes, rngs=nnx.Rngs(int(rng.integers(1 << 30))))
    x = rng.normal(size=(7, features)).astype(np.float32)
    want = _dense(_params(model)["out"], x.astype(np.float64))
    np.testing.assert_allclose(_forward(model, x), want, rtol=1e-5, atol=1e-5)


def test_mlp_is_relu_between_two_affine_maps():
    rng = np.random.default_rng()
    model = MLP(5, 11, 4, rngs=nnx.Rngs(int(rng.integers(1 << 30))))
    x = rng.normal(size=(9, 5)).astype(np.float32)
    p = _params(model)
    want = _dense(p["out"], np.maximum(_dense(p["hidden"], x.astype(np.float64)), 0.0))
    np.testing.assert_allclose(_forward(model, x), want, rtol=1e-5, atol=1e-5)


def test_cnn_is_conv_relu_pool_per_stage_then_affine_on_images_and_flat_rows():
    rng = np.random.default_rng()
    image_shape = (9, 6, 2)  # odd height: pooling drops the last row
    model = CNN(image_shape, 5, channels=(3, 4), rngs=nnx.Rngs(int(rng.integers(1 << 30))))
    x = rng.normal(size=(3, *image_shape)).astype(np.float32)
    p = _params(model)
    h = x.astype(np.float64)
    for stage in (p["convs"][0], p["convs"][1]):
        h = _max_pool_2x2(np.maximum(_conv_same_3x3(h, stage), 0.0))
    want = _dense(p["out"], h.reshape(3, -1))
    np.testing.assert_allclose(_forward(model, x), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_forward(model, x.reshape(3, -1)), want, rtol=1e-4, atol=1e-4)


def test_cross_entropy_is_the_mean_negative_log_softmax_of_the_label():
    rng = np.random.default_rng()
    logits = rng.normal(scale=3.0, size=(13, 6)).astype(np.float32)
    labels = rng.integers(0, 6, 13).astype(np.int32)
    z = logits.astype(np.float64)
    log_norm = z.max(1) + np.log(np.exp(z - z.max(1, keepdims=True)).sum(1))
    want = np.mean(log_norm - z[np.arange(13), labels])
    np.testing.assert_allclose(float(cross_entropy(logits, labels)), want, rtol=1e-5)


@pytest.mark.parametrize("build", [
    lambda: LogisticRegression(0, 3, rngs=nnx.Rngs(0)),
    lambda: LogisticRegression(4, 2.5, rngs=nnx.Rngs(0)),
    lambda: MLP(4, -1, 3, rngs=nnx.Rngs(0)),
    lambda: CNN((28, 28), 10, rngs=nnx.Rngs(0)),
    lambda: CNN("28x28", 10, rngs=nnx.Rngs(0)),
    lambda: CNN((28, 28, 1), 10, channels=(), rngs=nnx.Rngs(0)),
    lambda: CNN((3, 28, 1), 10, channels=(8, 16), rngs=nnx.Rngs(0)),
], ids=["no-features", "fractional-classes", "negative-hidden", "2d-image", "string-image",
        "no-convolution", "too-small-to-pool"])
def test_bad_sizes_are_refused(build):
    with pytest.raises(InvalidArgument):
        build()


@pytest.mark.parametrize("model, x_shape", [
    (LogisticRegression(4, 3, rngs=nnx.Rngs(0)), (2, 5)),
    (MLP(4, 8, 3, rngs=nnx.Rngs(0)), (2, 4, 1)),
    (CNN((8, 8, 1), 3, channels=(2,), rngs=nnx.Rngs(0)), (2, 8, 8, 3)),
    (CNN((8, 8, 1), 3, channels=(2,), rngs=nnx.Rngs(0)), (2, 63)),
])
def test_inputs_of_the_wrong_shape_name_both_shapes(model, x_shape):
    with pytest.raises(InvalidArgument, match=r"expects x of shape .*got \[" +
                       ", ".join(map(str, x_shape))):
        model(np.zeros(x_shape, np.float32))


def test_a_cnn_component_learns_a_separable_problem():
    rng = np.random.default_rng()
    x = rng.normal(size=(64, 6, 6, 1)).astype(np.float32)
    y = (x[:, :3].sum(axis=(1, 2, 3)) > x[:, 3:].sum(axis=(1, 2, 3))).astype(np.int32)
    model = flax_model(CNN((6, 6, 1), 2, channels=(4,), rngs=nnx.Rngs(0)), optax.adam(0.02),
                       cross_entropy)
    state = model.init(jax.random.key(0))

    @jax.jit
    def train(state):
        before = model.call("loss", state, x, y)[1]
        state = jax.lax.fori_loop(0, 40, lambda _, s: model.call("train", s, x, y)[0], state)
        return before, model.call("loss", state, x, y)[1]

    before, after = train(state)
    assert float(after) < 0.5 * float(before)
