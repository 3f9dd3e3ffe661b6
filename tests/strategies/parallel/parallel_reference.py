"""Float64 numpy references for the data-parallel tests: an MLP's softmax cross-entropy
and its gradient, the shards' batch rows, and SGD with momentum."""

from __future__ import annotations

import numpy as np

import bbjax


def numpy_params(params: dict) -> dict:
    """A flax params dict as nested dicts of float64 arrays."""
    return {k: numpy_params(v) if isinstance(v, dict) else np.asarray(v, np.float64)
            for k, v in params.items()}


def loss_and_gradient(params: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """The mean softmax cross-entropy of ``out(relu(hidden(x)))`` (``out(x)`` without a
    ``hidden`` layer) over the rows of ``x``, and its gradient."""
    x = x.astype(np.float64)
    hidden = params.get("hidden")
    a = np.maximum(x @ hidden["kernel"] + hidden["bias"], 0) if hidden else x
    logits = a @ params["out"]["kernel"] + params["out"]["bias"]
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    n = len(y)
    loss = -log_p[np.arange(n), y].mean()
    d = np.exp(log_p)
    d[np.arange(n), y] -= 1
    d /= n
    grads = {"out": {"kernel": a.T @ d, "bias": d.sum(0)}}
    if hidden:
        da = (d @ params["out"]["kernel"].T) * (a > 0)
        grads["hidden"] = {"kernel": x.T @ da, "bias": da.sum(0)}
    return float(loss), grads


def shard_rows(sizes: np.ndarray, batches: np.ndarray, replica_index: int,
               iteration: int) -> np.ndarray:
    """The rows (within its shard) of a replica's batch of ``iteration``."""
    n, b = int(sizes[replica_index]), int(batches[replica_index])
    return (iteration * b + np.arange(b)) % n


def tree_map(fn, *trees):
    if isinstance(trees[0], dict):
        return {k: tree_map(fn, *(t[k] for t in trees)) for k in trees[0]}
    return fn(*trees)


def assert_tree_close(got: dict, want: dict, **tolerance) -> None:
    tree_map(lambda g, w: np.testing.assert_allclose(np.asarray(g), w, **tolerance), got, want)


def compile_with(module: bbjax.Module, bindings: dict, **compiler) -> bbjax.Compiled:
    c = bbjax.Compiler(**compiler)
    for slot, component in bindings.items():
        c = c.bind(slot, component)
    return c.compile(module)
