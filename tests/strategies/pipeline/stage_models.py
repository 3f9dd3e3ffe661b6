"""Test stages for the pipeline executor (no bbjax model code): an MLP cut into ``P`` dense
stages and a small CNN (two convolutions, a reshape into a dense layer, a dense head),
random parameters from a seed, and the non-pipelined reference step of the whole model."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _dense(rng: np.random.Generator, n_in: int, n_out: int) -> dict:
    return {"w": (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(np.float32),
            "b": rng.normal(scale=0.1, size=n_out).astype(np.float32)}


def hidden(params: dict, x: jax.Array) -> jax.Array:
    return jnp.tanh(x @ params["w"] + params["b"])


def head(params: dict, x: jax.Array) -> jax.Array:
    return x @ params["w"] + params["b"]


def mlp(stages: int, seed: int, width: int = 6, classes: int = 3) -> SimpleNamespace:
    """``stages`` dense stages 5 -> 7 -> 6 -> ... -> ``classes`` (every width different)."""
    rng = np.random.default_rng(seed)
    sizes = [5] + [width + (s % 2) for s in range(stages - 1)] + [classes]
    params = tuple(_dense(rng, a, b) for a, b in itertools.pairwise(sizes))
    return SimpleNamespace(applies=(hidden,) * (stages - 1) + (head,), params=params)


def _conv(params: dict, x: jax.Array, stride: int) -> jax.Array:
    y = jax.lax.conv_general_dilated(x, params["k"], (stride, stride), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y + params["b"])


def conv(params: dict, x: jax.Array) -> jax.Array:
    return _conv(params, x, 1)


def conv_flatten(params: dict, x: jax.Array) -> jax.Array:
    y = _conv(params, x, 2)
    return y.reshape(y.shape[0], -1)


def cnn(stages: int, seed: int) -> SimpleNamespace:
    """On ``[n, 8, 8, 1]`` images: conv 3x3x4, conv 3x3x6 stride 2 + reshape to 96, then
    ``stages - 2`` dense stages (96 -> 12 -> ... -> 3)."""
    rng = np.random.default_rng(seed)
    params = [{"k": (rng.normal(size=(3, 3, 1, 4)) / 3).astype(np.float32),
               "b": np.zeros(4, np.float32)},
              {"k": (rng.normal(size=(3, 3, 4, 6)) / 6).astype(np.float32),
               "b": rng.normal(scale=0.1, size=6).astype(np.float32)}]
    sizes = [96] + [12] * (stages - 3) + [3]
    params += [_dense(rng, a, b) for a, b in itertools.pairwise(sizes)]
    applies = (conv, conv_flatten) + (hidden,) * (stages - 3) + (head,)
    return SimpleNamespace(applies=applies, params=tuple(params))


def loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def data(kind: str, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (rows, 5) if kind == "mlp" else (rows, 8, 8, 1)
    return (rng.normal(size=shape).astype(np.float32),
            rng.integers(0, 3, rows).astype(np.int32))


def reference(stages, optimizer, x, y, steps: int) -> tuple[tuple, list[float]]:
    """``steps`` non-pipelined steps: ``jax.grad`` of the composed model's mean loss over
    the whole batch, ``optimizer`` on the tuple of every stage's parameters."""
    def objective(params):
        out = x
        for apply, p in zip(stages.applies, params):
            out = apply(p, out)
        return loss(out, y)

    params = jax.tree.map(jnp.asarray, tuple(stages.params))
    state, losses = optimizer.init(params), []
    for _ in range(steps):
        value, grads = jax.value_and_grad(objective)(params)
        updates, state = optimizer.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        losses.append(float(value))
    return params, losses
