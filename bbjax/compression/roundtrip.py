"""A codec as an algorithm: each client's update encoded, then decoded, as the server
receives it (with the codec's error-feedback residual kept per client)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from bbjax._checks import check_count
from bbjax.algorithms.base import Algorithm, EmptyState, check_mask, check_stack
from bbjax.compression.codec import Codec, PyTree
from bbjax.errors import CompressionError


def compress(codec: Codec, num_clients: int | None = None) -> Algorithm:
    """``codec`` applied to every row of a cohort stack ``[n, ...]``: row ``i`` is
    ``decode(encode(state_i, update_i, key_i))`` with ``key_i = jax.random.split(key, n)[i]``
    (``key`` may be None for deterministic codecs).

    A codec that keeps a sender state (top-k's error-feedback residual) needs
    ``num_clients``: the state is then one sender state per client, ``[num_clients, ...]``,
    and ``update(..., clients=ids, mask=mask)`` reads and writes the states of the clients
    ``ids`` (int ``[n]``; default ``0..n-1``, which needs ``n == num_clients``), leaving
    those of masked-out rows as they were. A stateless codec keeps no state.
    ``update(updates, state, params=None, *, key=None, mask=None, clients=None)``.
    """
    if num_clients is not None:
        num_clients = check_count("num_clients", num_clients, error=CompressionError)

    def stateless(params: PyTree) -> bool:
        return not jax.tree.leaves(jax.eval_shape(codec.init, params))

    def init(params: PyTree) -> Any:
        if params is None:
            raise CompressionError("compress: init needs params, the template of the updates")
        if stateless(params):
            return EmptyState()
        if num_clients is None:
            raise CompressionError("compress: this codec keeps a sender state (an "
                                   "error-feedback residual) per client; give num_clients")
        one = codec.init(params)
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_clients, *jnp.shape(x))), one)

    def update(updates: PyTree, state: Any, params: PyTree = None, *,
               key: jax.Array | None = None, mask: ArrayLike | None = None,
               clients: ArrayLike | None = None) -> tuple[PyTree, Any]:
        n = check_stack("compress", updates, CompressionError)
        keys = None if key is None else jax.random.split(key, n)
        if isinstance(state, EmptyState):
            encoded = jax.vmap(codec.encode, (None, 0, None if keys is None else 0))(
                (), updates, keys)
            return jax.vmap(codec.decode)(encoded[1]), state
        mask = check_mask("compress", mask, n, CompressionError)
        if clients is None:
            if n != num_clients:
                raise CompressionError(f"compress: {n} rows for {num_clients} clients' "
                                       "states; give clients=ids of the rows")
            clients = jnp.arange(n)
        clients = jnp.asarray(clients)
        if clients.shape != (n,) or not jnp.issubdtype(clients.dtype, jnp.integer):
            raise CompressionError(f"compress: clients must be int ({n},), got "
                                   f"{clients.dtype} {clients.shape}")
        rows = jax.tree.map(lambda s: s[clients], state)
        new_rows, payloads, _ = jax.vmap(codec.encode, (0, 0, None if keys is None else 0))(
            rows, updates, keys)
        keep = jax.tree.map(
            lambda new, old: jnp.where(mask.reshape((n,) + (1,) * (new.ndim - 1)), new, old),
            new_rows, rows)
        state = jax.tree.map(lambda s, r: s.at[clients].set(r), state, keep)
        return jax.vmap(codec.decode)(payloads), state

    return Algorithm(init, update, ("mask", "clients"))
