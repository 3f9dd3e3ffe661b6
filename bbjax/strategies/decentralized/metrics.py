"""What a decentralized run is measured by: how far the nodes' models are from agreeing,
and how good their average is.

``states`` below are ``simulate``'s (``states["node"][slot]``, leaves stacked over the
nodes); :func:`evaluator` gives the ``evaluate`` function of ``bbjax.simulate``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from bbjax.components import Component
from bbjax.errors import InvalidArgument
from bbjax.strategies.decentralized.gossip import NODE, PyTree


def average(stacked: PyTree) -> PyTree:
    """The mean over the leading (node) axis of every leaf: ``x̄ = (1/N) Σ_i x_i``."""
    return jax.tree.map(lambda x: jnp.mean(x, axis=0), stacked)


def consensus_distance(stacked: PyTree) -> jax.Array:
    """``(1/N) Σ_i ‖x_i − x̄‖²``, the squared norm over all leaves together (float32)."""
    mean = average(stacked)
    return sum(jnp.sum((x.astype(jnp.float32) - m.astype(jnp.float32)) ** 2) / x.shape[0]
               for x, m in zip(jax.tree.leaves(stacked), jax.tree.leaves(mean)))


def evaluator(model: Component, x: jax.Array, y: jax.Array, mask: jax.Array | None = None,
              *, slot: str = "model",
              entry: str = NODE) -> Callable[[dict[str, Any]], dict[str, jax.Array]]:
    """``evaluate(states)`` for ``bbjax.simulate``: the ``consensus_distance`` of the nodes'
    ``slot`` parameters, and the ``loss`` (mean cross-entropy) and ``accuracy`` of their
    average model on held-out rows ``x``, ``y`` (integer labels; ``mask`` marks the real
    rows, default all).

    Raises :class:`InvalidArgument` when ``x`` and ``y`` (and ``mask``) do not share their
    leading axis.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    mask = jnp.ones(y.shape, bool) if mask is None else jnp.asarray(mask, bool)
    if not x.shape[:1] == y.shape == mask.shape:
        raise InvalidArgument(f"evaluator: x {list(x.shape)}, y {list(y.shape)} and mask "
                              f"{list(mask.shape)} need one leading axis of rows (y, mask 1-D)")
    weight = mask.astype(jnp.float32) / jnp.maximum(mask.sum(), 1)

    def evaluate(states: dict[str, Any]) -> dict[str, jax.Array]:
        stacked = states[entry][slot]
        everyone = jax.vmap(lambda s: model.call("params", s)[1])(stacked)
        first = jax.tree.map(lambda a: a[0], stacked)
        state, _ = model.call("load_parameters", first, average(everyone))
        _, logits = model.call("forward", state, x)
        log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        nll = -jnp.take_along_axis(log_p, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
        hits = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
        return {"consensus_distance": consensus_distance(everyone),
                "loss": jnp.sum(weight * nll), "accuracy": jnp.sum(weight * hits)}

    return evaluate
