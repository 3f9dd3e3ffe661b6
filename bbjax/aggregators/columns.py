"""Per-coordinate kernels over the client axis of stacked parameters.

A stacked leaf ``[n, *shape]`` is viewed as a matrix ``[n, d]`` (clients × coordinates) and
walked in column blocks, so that the extra memory of a kernel is O(n · block + d), never a
copy of the stack. Block size and sorting algorithm are picked per platform with
:func:`jax.lax.platform_dependent`: on CPU, cache-sized blocks and a bitonic sorting network
(XLA's CPU sort is about 20× slower than the network); elsewhere large blocks and
:func:`jax.lax.sort`.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

CPU_BLOCK_ELEMENTS = 1 << 20
ACCELERATOR_BLOCK_ELEMENTS = 1 << 26


def _block_columns(n: Any, elements: int, d: int) -> int:
    """Columns per block: ``elements // n``, or all ``d`` when ``n`` is symbolic (a cohort
    size fixed only when the traced program runs)."""
    return max(1, elements // max(n, 1)) if isinstance(n, int) else max(d, 1)


def _slice(x: jax.Array, start: Any, size: int) -> jax.Array:
    if isinstance(start, int):
        return lax.slice_in_dim(x, start, start + size, axis=-1)
    return lax.dynamic_slice_in_dim(x, start, size, axis=-1)


def _map_blocks(fn: Callable, block: int, *xs: jax.Array) -> jax.Array:
    d = xs[0].shape[-1]
    if d <= block:
        return fn(*xs)
    full, rest = divmod(d, block)
    parts = []
    if full == 1:
        parts.append(fn(*(_slice(x, 0, block) for x in xs)))
    elif full > 1:
        mapped = lax.map(lambda i: fn(*(_slice(x, i * block, block) for x in xs)),
                         jnp.arange(full))
        parts.append(mapped.reshape(full * block))
    if rest:
        parts.append(fn(*(_slice(x, full * block, rest) for x in xs)))
    return jnp.concatenate(parts) if len(parts) > 1 else parts[0]


def _fold_blocks(fn: Callable, block: int, init: Any, *xs: jax.Array) -> Any:
    d = xs[0].shape[-1]
    if d <= block:
        return fn(init, *xs)
    full, rest = divmod(d, block)
    carry = init
    if full == 1:
        carry = fn(carry, *(_slice(x, 0, block) for x in xs))
    elif full > 1:
        carry = lax.fori_loop(
            0, full, lambda i, c: fn(c, *(_slice(x, i * block, block) for x in xs)), carry)
    if rest:
        carry = fn(carry, *(_slice(x, full * block, rest) for x in xs))
    return carry


def _flat(stacked: jax.Array, center: jax.Array | None) -> tuple[jax.Array, ...]:
    x = stacked.reshape(stacked.shape[0], -1)
    return (x,) if center is None else (x, jnp.reshape(center, -1))


def map_columns(fn: Callable[..., jax.Array], stacked: jax.Array,
                center: jax.Array | None = None) -> jax.Array:
    """``fn(block[, center_block]) -> [c]`` over column blocks ``[n, c]`` of ``stacked``.

    Returns the outputs concatenated and reshaped to ``stacked.shape[1:]``.
    """
    xs = _flat(stacked, center)
    n, d = xs[0].shape
    out = lax.platform_dependent(
        *xs,
        cpu=partial(_map_blocks, fn, _block_columns(n, CPU_BLOCK_ELEMENTS, d)),
        default=partial(_map_blocks, fn, _block_columns(n, ACCELERATOR_BLOCK_ELEMENTS, d)))
    return out.reshape(stacked.shape[1:])


def fold_columns(fn: Callable[..., Any], init: Any, stacked: jax.Array,
                 center: jax.Array | None = None) -> Any:
    """``carry = fn(carry, block[, center_block])`` over column blocks ``[n, c]``."""
    xs = _flat(stacked, center)
    n, d = xs[0].shape
    return lax.platform_dependent(
        init, *xs,
        cpu=partial(_fold_blocks, fn, _block_columns(n, CPU_BLOCK_ELEMENTS, d)),
        default=partial(_fold_blocks, fn, _block_columns(n, ACCELERATOR_BLOCK_ELEMENTS, d)))


def all_finite(stacked: jax.Array) -> jax.Array:
    """``[n]`` bool: whether each client's leaf is free of NaN and infinities.

    XLA's max and min propagate NaN, so both extremes are finite exactly when every entry is.
    """
    x = stacked.reshape(stacked.shape[0], -1)
    high, low = jnp.max(x, axis=1, initial=0), jnp.min(x, axis=1, initial=0)
    return jnp.isfinite(high) & jnp.isfinite(low)


def _offsets(b: jax.Array, c: jax.Array | None, acc: Any) -> jax.Array:
    return b.astype(acc) if c is None else b.astype(acc) - c.astype(acc)


def client_sum(coef: jax.Array, stacked: jax.Array, present: jax.Array,
               center: jax.Array | None = None) -> jax.Array:
    """``sum_i coef_i * (stacked_i - center)`` over the present clients (``center`` defaults
    to zero), in ``stacked``'s dtype.

    Absent clients contribute nothing even when their rows hold NaN or infinities.
    """
    acc = jnp.promote_types(stacked.dtype, jnp.float32)
    coef = jnp.where(present, coef, 0).astype(acc)

    def block_sum(b: jax.Array, c: jax.Array | None = None) -> jax.Array:
        b = jnp.where(present[:, None], _offsets(b, c, acc), 0)
        return jnp.matmul(coef, b, precision=lax.Precision.HIGHEST)

    return map_columns(block_sum, stacked, center).astype(stacked.dtype)


def sq_distances_to(stacked: jax.Array, center: jax.Array | None = None) -> jax.Array:
    """``[n]``: ``||stacked_i - center||^2`` for every client (``center`` defaults to zero)."""
    acc = jnp.promote_types(stacked.dtype, jnp.float32)
    return fold_columns(
        lambda s, b, c=None: s + jnp.sum(jnp.square(_offsets(b, c, acc)), axis=1),
        jnp.zeros(stacked.shape[:1], acc), stacked, center)


def gram(stacked: jax.Array, center: jax.Array | None = None) -> jax.Array:
    """``[n, n]``: inner products of the clients' offsets from ``center`` (default zero)."""
    acc = jnp.promote_types(stacked.dtype, jnp.float32)

    def add(g: jax.Array, b: jax.Array, c: jax.Array | None = None) -> jax.Array:
        y = _offsets(b, c, acc)
        return g + jnp.matmul(y, y.T, precision=lax.Precision.HIGHEST)

    n = stacked.shape[0]
    return fold_columns(add, jnp.zeros((n, n), acc), stacked, center)


def _sorting_network(x: jax.Array) -> jax.Array:
    """Bitonic sort along axis 0 (no NaN), padded to a power of two with +inf."""
    n, rest = x.shape[0], x.shape[1:]
    p = 1 << max(n - 1, 0).bit_length()
    if p > n:
        x = jnp.concatenate([x, jnp.full((p - n, *rest), jnp.inf, x.dtype)])
    k = 2
    while k <= p:
        # Merge sorted halves of each k-block: compare i with k-1-i, then half-cleaners.
        y = x.reshape(p // k, 2, k // 2, *rest)
        a, b = y[:, 0], jnp.flip(y[:, 1], axis=1)
        x = jnp.stack([jnp.minimum(a, b), jnp.flip(jnp.maximum(a, b), axis=1)], axis=1)
        j = k // 4
        while j >= 1:
            y = x.reshape(p // (2 * j), 2, j, *rest)
            x = jnp.stack([jnp.minimum(y[:, 0], y[:, 1]), jnp.maximum(y[:, 0], y[:, 1])],
                          axis=1)
            j //= 2
        x = x.reshape(p, *rest)
        k *= 2
    return x[:n]


def sort_clients(x: jax.Array) -> jax.Array:
    """Sort ``x`` along its client axis 0, ascending. ``x`` must hold no NaN."""
    return lax.platform_dependent(x, cpu=_sorting_network, default=partial(jnp.sort, axis=0))
