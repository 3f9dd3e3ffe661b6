"""Fixed-shape minibatches of one client's padded examples, drawn only from real rows.

Both functions take one client's slice of a :class:`FederatedData` (``x``: ``[max_size, ...]``,
``mask``: ``[max_size]``, ``sizes``: a scalar), as ``jax.vmap`` over the stacked data gives::

    batches = jax.vmap(sample_batch, (0, 0, None))(keys, data, 32)   # x: [num_clients, 32, ...]

They are jittable and vmappable; ``batch_size`` is static. A returned :class:`Batch` has a
``mask`` marking the rows that hold real examples; the other rows are zeros and must get
zero weight (e.g. a loss summed over ``mask`` and divided by ``max(mask.sum(), 1)``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bbjax.errors import DataError
from bbjax._checks import check_count
from bbjax.data.federated import FederatedData


class Batch(NamedTuple):
    """``x``: ``[..., batch_size, *feature_shape]``, ``y``: ``[..., batch_size, *label_shape]``,
    ``mask``: bool ``[..., batch_size]``, True on rows holding a real example."""

    x: jax.Array
    y: jax.Array
    mask: jax.Array


def sample_batch(key: jax.Array, client: FederatedData, batch_size: int) -> Batch:
    """``batch_size`` distinct real examples of ``client``, uniformly at random, in random order.

    A client with ``n < batch_size`` real examples gives all ``n`` of them in rows
    ``0 .. n - 1`` (in random order) and masked zero rows after; no example is repeated.
    """
    batch_size = check_count("batch_size", batch_size, error=DataError)
    mask = _client_mask(client, "sample_batch")
    max_size = mask.shape[0]
    scores = jnp.where(mask, jax.random.uniform(key, (max_size,)), -1.0)
    _, rows = jax.lax.top_k(scores, min(batch_size, max_size))
    rows = jnp.pad(rows, (0, batch_size - rows.shape[0]))
    return _take(client, rows, jnp.arange(batch_size) < client.sizes)


def epoch_batches(key: jax.Array, client: FederatedData, batch_size: int) -> Batch:
    """One pass over ``client``'s real examples in random order, as
    ``ceil(max_size / batch_size)`` batches (leading axis of the returned arrays).

    Every real example appears exactly once: a client with ``n`` examples fills the first
    ``n`` rows of the flattened batches; the rest are masked zero rows, so its trailing
    batches may be entirely masked.
    """
    batch_size = check_count("batch_size", batch_size, error=DataError)
    mask = _client_mask(client, "epoch_batches")
    max_size = mask.shape[0]
    num_batches = -(-max_size // batch_size)
    scores = jnp.where(mask, jax.random.uniform(key, (max_size,)), 2.0)
    rows = jnp.pad(jnp.argsort(scores), (0, num_batches * batch_size - max_size))
    batch = _take(client, rows, jnp.arange(num_batches * batch_size) < client.sizes)
    return jax.tree.map(lambda a: a.reshape((num_batches, batch_size) + a.shape[1:]), batch)


def _client_mask(client: FederatedData, fn: str) -> jax.Array:
    mask = jnp.asarray(client.mask)
    if mask.ndim != 1 or jnp.ndim(client.sizes) != 0:
        raise DataError(
            f"{fn} takes one client's data (mask [max_size], scalar sizes); got mask of shape "
            f"{mask.shape}: vmap it over the client axis of the stacked FederatedData"
        )
    return mask


def _take(client: FederatedData, rows: jax.Array, valid: jax.Array) -> Batch:
    def take(a: jax.Array) -> jax.Array:
        picked = jnp.asarray(a)[rows]
        keep = valid.reshape(valid.shape + (1,) * (picked.ndim - 1))
        return jnp.where(keep, picked, jnp.zeros((), picked.dtype))

    return Batch(take(client.x), take(client.y), valid)
