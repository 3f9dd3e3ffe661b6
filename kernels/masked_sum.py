"""Modular aggregation of a stack of 64-bit limbs: a Pallas kernel beside its pure-jnp reference.

Every function here maps ``lo, hi`` (uint32[P, M]: participant ``p``'s element ``m`` is
``lo + 2**32 hi``, below ``q[m]``) and the orders ``q_lo, q_hi`` (uint32[M], each order in
``(0, 2**64)``) to the limbs ``(lo, hi)`` (uint32[M]) of ``sum_p x[p, m] mod q[m]``,
exactly. Modular addition is associative, so any summation order gives the same result.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from bbjax.errors import InvalidArgument

Limbs = tuple[jax.Array, jax.Array]


def add_mod(a: Limbs, b: Limbs, q: Limbs) -> Limbs:
    """``(a + b) mod q`` of 64-bit limb pairs with ``a, b < q``."""
    lo = a[0] + b[0]
    hi_partial = a[1] + b[1]
    hi = hi_partial + (lo < a[0]).astype(jnp.uint32)
    carry = (hi_partial < a[1]) | (hi < hi_partial)
    below = (hi < q[1]) | ((hi == q[1]) & (lo < q[0]))
    wrap = carry | ~below
    borrow = (lo < q[0]).astype(jnp.uint32)
    return jnp.where(wrap, lo - q[0], lo), jnp.where(wrap, hi - q[1] - borrow, hi)


def _check(lo: jax.Array, hi: jax.Array, q_lo: jax.Array, q_hi: jax.Array) -> None:
    if lo.ndim != 2 or hi.shape != lo.shape or q_lo.shape != lo.shape[1:] or q_hi.shape != q_lo.shape:
        raise InvalidArgument(f"modular_sum: expected lo, hi [P, M] and q_lo, q_hi [M]; got "
                              f"{lo.shape}, {hi.shape}, {q_lo.shape}, {q_hi.shape}")
    if lo.shape[0] == 0:
        raise InvalidArgument("modular_sum: nothing to sum (P = 0)")
    if not all(a.dtype == jnp.uint32 for a in (lo, hi, q_lo, q_hi)):
        raise InvalidArgument("modular_sum: every input must be uint32")


@jax.jit
def modular_sum_reference(lo: jax.Array, hi: jax.Array, q_lo: jax.Array, q_hi: jax.Array) -> Limbs:
    """Pure-jnp modular sum over participants, as a pairwise tree (module docstring)."""
    _check(lo, hi, q_lo, q_hi)
    while lo.shape[0] > 1:
        if lo.shape[0] % 2:
            lo, hi = (jnp.pad(x, ((0, 1), (0, 0))) for x in (lo, hi))
        lo, hi = add_mod((lo[0::2], hi[0::2]), (lo[1::2], hi[1::2]), (q_lo, q_hi))
    return lo[0], hi[0]


def _kernel(lo_ref, hi_ref, q_lo_ref, q_hi_ref, out_lo_ref, out_hi_ref, *, rows: int):
    q = (q_lo_ref[...], q_hi_ref[...])
    acc = (lo_ref[0:1, :], hi_ref[0:1, :])
    for r in range(1, rows):
        acc = add_mod(acc, (lo_ref[r : r + 1, :], hi_ref[r : r + 1, :]), q)
    out_lo_ref[0] = acc[0]
    out_hi_ref[0] = acc[1]


@functools.partial(jax.jit, static_argnames=("rows", "tile", "interpret"))
def modular_sum_pallas(lo: jax.Array, hi: jax.Array, q_lo: jax.Array, q_hi: jax.Array, *,
                      rows: int = 8, tile: int = 512, interpret: bool = False) -> Limbs:
    """The same modular sum as :func:`modular_sum_reference`, as a Pallas kernel that adds
    ``rows`` participants of a ``tile`` of elements per step, repeated until one row is
    left (inputs are padded with zeros, the identity, to whole tiles);
    ``interpret=True`` runs it on any backend."""
    _check(lo, hi, q_lo, q_hi)
    m = lo.shape[1]
    cols = -(-m // tile) * tile
    q = [jnp.pad(x, (0, cols - m), constant_values=1)[None, :] for x in (q_lo, q_hi)]
    while True:
        p = -(-lo.shape[0] // rows) * rows
        lo, hi = (jnp.pad(x, ((0, p - x.shape[0]), (0, cols - x.shape[1]))) for x in (lo, hi))
        part = jax.ShapeDtypeStruct((p // rows, 1, cols), jnp.uint32)
        lo, hi = pl.pallas_call(
            functools.partial(_kernel, rows=rows),
            out_shape=(part, part),
            grid=(p // rows, cols // tile),
            in_specs=[pl.BlockSpec((rows, tile), lambda k, i: (k, i))] * 2
            + [pl.BlockSpec((1, tile), lambda k, i: (0, i))] * 2,
            out_specs=[pl.BlockSpec((1, 1, tile), lambda k, i: (k, 0, i))] * 2,
            interpret=interpret,
        )(lo, hi, *q)
        lo, hi = lo[:, 0, :], hi[:, 0, :]
        if lo.shape[0] == 1:
            return lo[0, :m], hi[0, :m]


def modular_sum(lo: jax.Array, hi: jax.Array, q_lo: jax.Array, q_hi: jax.Array) -> Limbs:
    """The modular sum over participants: the Pallas kernel on GPU and TPU, the pure-jnp
    reference elsewhere."""
    if jax.default_backend() in ("gpu", "tpu"):
        return modular_sum_pallas(lo, hi, q_lo, q_hi)
    return modular_sum_reference(lo, hi, q_lo, q_hi)
