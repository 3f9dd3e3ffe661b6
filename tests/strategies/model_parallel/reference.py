"""References for the model-parallel tests: the single-device training step of the unsplit
model (jax, float32) and a float64 numpy MLP of ``dense<i>`` ReLU layers and a ``head``
with SGD and Adam."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import bbjax
from bbjax.models import cross_entropy


def compile_with(module: bbjax.Module, bindings: dict, **compiler) -> bbjax.Compiled:
    c = bbjax.Compiler(**compiler)
    for slot, component in bindings.items():
        c = c.bind(slot, component)
    return c.compile(module)


def batches(x: np.ndarray, y: np.ndarray, batch: int, steps: int):
    """The batches a full-batch ``data_shard(x, y, batch)`` reads: step ``t``'s rows
    ``(t · batch + j) mod N``."""
    for t in range(steps):
        rows = (t * batch + np.arange(batch)) % len(x)
        yield x[rows], y[rows]


def single_device(model: nnx.Module, optimizer: optax.GradientTransformation, x, y,
                  batch: int, steps: int) -> tuple[dict, list[float]]:
    """The unsplit model trained ``steps`` steps on one device: its parameters (a pure
    dict) and the losses before each step."""
    graphdef, params = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(params)

    @jax.jit
    def step(params, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(
            lambda p: cross_entropy(nnx.merge(graphdef, p)(xb), yb))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state, losses = optimizer.init(params), []
    for xb, yb in batches(x, y, batch, steps):
        params, opt_state, loss = step(params, opt_state, jnp.asarray(xb), jnp.asarray(yb))
        losses.append(float(loss))
    return params, losses


def _mlp_gradient(params: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """Mean softmax cross-entropy of ``head(relu(dense_k(… relu(dense0(x)))))`` and its
    gradient, float64."""
    depth = len(params) - 1
    acts = [x.astype(np.float64)]
    for i in range(depth):
        layer = params[f"dense{i}"]
        acts.append(np.maximum(acts[-1] @ layer["kernel"] + layer["bias"], 0))
    logits = acts[-1] @ params["head"]["kernel"] + params["head"]["bias"]
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    n = len(y)
    d = np.exp(log_p)
    d[np.arange(n), y] -= 1
    d /= n
    grads = {"head": {"kernel": acts[-1].T @ d, "bias": d.sum(0)}}
    back = d @ params["head"]["kernel"].T
    for i in reversed(range(depth)):
        back = back * (acts[i + 1] > 0)
        grads[f"dense{i}"] = {"kernel": acts[i].T @ back, "bias": back.sum(0)}
        back = back @ params[f"dense{i}"]["kernel"].T
    return float(-log_p[np.arange(n), y].mean()), grads


def numpy_mlp(params: dict, x, y, batch: int, steps: int, *, lr: float,
              adam: bool = False, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
              ) -> tuple[dict, list[float]]:
    """The float64 numpy MLP trained like :func:`single_device` with ``optax.sgd(lr)`` or
    ``optax.adam(lr)``."""
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    m = jax.tree.map(np.zeros_like, params)
    v = jax.tree.map(np.zeros_like, params)
    losses = []
    for t, (xb, yb) in enumerate(batches(x, y, batch, steps), start=1):
        loss, grads = _mlp_gradient(params, xb, yb)
        losses.append(loss)
        if adam:
            m = jax.tree.map(lambda a, g: b1 * a + (1 - b1) * g, m, grads)
            v = jax.tree.map(lambda a, g: b2 * a + (1 - b2) * g * g, v, grads)
            c1, c2 = 1 - b1 ** t, 1 - b2 ** t
            params = jax.tree.map(
                lambda p, a, c, c1=c1, c2=c2: p - lr * (a / c1) / (np.sqrt(c / c2) + eps),
                params, m, v)
        else:
            params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    return params, losses
