"""A DataSource without randomness (its batches cycle in order), so that a partition calling
it runs on onnxruntime, which has no ``ai.bytesandbrains.random`` ops."""

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.components import Component, Role


def cycling_source(x: np.ndarray, y: np.ndarray, batch_size: int) -> Component:
    """Batches ``[i * batch_size, (i + 1) * batch_size)`` of ``x``, ``y`` for i = 0, 1, ...
    modulo the number of whole batches; ``init(key, x, y)`` takes a peer's own rows."""
    batches = x.shape[0] // batch_size

    def init(key, x=x, y=y):
        return {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y, jnp.int32),
                "position": jnp.int32(0)}

    def next_batch(state):
        start = state["position"] * batch_size
        rows = [jax.lax.dynamic_slice_in_dim(state[k], start, batch_size) for k in ("x", "y")]
        return {**state, "position": (state["position"] + 1) % batches}, tuple(rows)

    def num_examples(state):
        return state, jnp.int32(x.shape[0])

    return Component(Role.DATA_SOURCE, init, {"next_batch": next_batch,
                                              "num_examples": num_examples},
                     "cycling_source", config={"batch_size": batch_size})
