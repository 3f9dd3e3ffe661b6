"""The classification loss the zoo's models train with."""

from __future__ import annotations

import jax
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of ``logits`` ``[batch, classes]`` against integer
    ``labels`` ``[batch]``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
