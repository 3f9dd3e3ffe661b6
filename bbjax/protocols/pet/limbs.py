"""Exact unsigned 64-bit integers as two uint32 limbs, for devices without 64-bit integers.

A :class:`U64` is a pair of uint32 arrays of one shape, ``value = lo + 2**32 * hi``. The
arithmetic here is elementwise, exact and jittable without ``jax_enable_x64``: a 32 x 32
-> 64-bit product (from 16-bit halves), 64-bit add / subtract / compare, addition modulo a
group order, and 96-bit shifts for the fixed-point encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.errors import InvalidArgument

_MASK16 = np.uint32(0xFFFF)
_U32 = jnp.uint32


class U64(NamedTuple):
    """Unsigned integers below 2**64: ``lo + 2**32 * hi`` (uint32 arrays of one shape)."""

    lo: jax.Array
    hi: jax.Array


def u64_from_ints(values: int | Sequence[int] | np.ndarray) -> U64:
    """Host integers (each in ``[0, 2**64)``) as numpy limbs."""
    arr = np.asarray(values, dtype=object)
    if not all(0 <= int(v) < 2**64 for v in arr.flat):
        raise InvalidArgument("U64 values must be integers in [0, 2**64)")
    wide = arr.astype(np.uint64)
    return U64((wide & np.uint64(0xFFFFFFFF)).astype(np.uint32), (wide >> np.uint64(32)).astype(np.uint32))


def u64_to_uint64(x: U64) -> np.ndarray:
    """Limbs as a host numpy uint64 array."""
    return np.asarray(x.lo).astype(np.uint64) | (np.asarray(x.hi).astype(np.uint64) << np.uint64(32))


def mul_wide(a: jax.Array, b: jax.Array) -> U64:
    """The full 64-bit product of uint32 arrays ``a`` and ``b``."""
    a0, a1 = a & _MASK16, a >> 16
    b0, b1 = b & _MASK16, b >> 16
    low, mid_a, mid_b, high = a0 * b0, a0 * b1, a1 * b0, a1 * b1  # each below 2**32
    mid = mid_a + mid_b
    mid_carry = (mid < mid_a).astype(_U32)  # the middle sum's bit 32
    lo = low + (mid << 16)
    lo_carry = (lo < low).astype(_U32)
    hi = high + (mid >> 16) + (mid_carry << 16) + lo_carry
    return U64(lo, hi)


def add(a: U64, b: U64) -> tuple[U64, jax.Array]:
    """``a + b`` modulo 2**64 and the carry out (bool)."""
    lo = a.lo + b.lo
    c = lo < a.lo
    hi_partial = a.hi + b.hi
    hi = hi_partial + c.astype(_U32)
    carry = (hi_partial < a.hi) | (hi < hi_partial)
    return U64(lo, hi), carry


def sub(a: U64, b: U64) -> U64:
    """``a - b`` modulo 2**64."""
    borrow = (a.lo < b.lo).astype(_U32)
    return U64(a.lo - b.lo, a.hi - b.hi - borrow)


def less(a: U64, b: U64) -> jax.Array:
    """``a < b`` (bool)."""
    return (a.hi < b.hi) | ((a.hi == b.hi) & (a.lo < b.lo))


def where(cond: jax.Array, a: U64, b: U64) -> U64:
    """Elementwise ``a`` where ``cond`` else ``b``."""
    return U64(jnp.where(cond, a.lo, b.lo), jnp.where(cond, a.hi, b.hi))


def add_mod(a: U64, b: U64, q: U64) -> U64:
    """``(a + b) mod q`` for ``a, b < q`` (exact also when ``a + b`` exceeds 2**64)."""
    s, carry = add(a, b)
    return where(carry | ~less(s, q), sub(s, q), s)


def mul_u64_u32(a: U64, b: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The 96-bit product ``a * b`` as three uint32 limbs, least significant first."""
    p0 = mul_wide(a.lo, b)
    p1 = mul_wide(a.hi, b)
    x1 = p0.hi + p1.lo
    return p0.lo, x1, p1.hi + (x1 < p0.hi).astype(_U32)


def _limb(limbs: Sequence[jax.Array], index: jax.Array) -> jax.Array:
    """``limbs[index]``, 0 outside the sequence, for an int32 ``index`` array."""
    out = jnp.zeros_like(limbs[0])
    for i, x in enumerate(limbs):
        out = jnp.where(index == i, x, out)
    return out


def shift_right(limbs: Sequence[jax.Array], shift: jax.Array) -> tuple[list[jax.Array], jax.Array]:
    """``floor(x / 2**shift)`` of the multi-limb ``x`` (same number of limbs) and whether the
    bits shifted out were not all zero; ``shift`` is a non-negative int32 array."""
    words, bits = shift >> 5, (shift & 31).astype(_U32)
    out = []
    for i in range(len(limbs)):
        low = _limb(limbs, words + i)
        high = _limb(limbs, words + i + 1)
        spill = jnp.where(bits == 0, _U32(0), high << (np.uint32(32) - bits))
        out.append((low >> bits) | spill)
    lost = jnp.zeros(shift.shape, bool)
    for i, x in enumerate(limbs):
        dropped = jnp.where(words > i, x, jnp.where(words == i, x & ((_U32(1) << bits) - 1), 0))
        lost = lost | (dropped != 0)
    return out, lost


def shift_left_64(limbs: Sequence[jax.Array], shift: jax.Array) -> tuple[U64, jax.Array]:
    """The low 64 bits of ``x * 2**shift`` for a multi-limb ``x`` and ``0 <= shift``, and
    whether the product reaches 2**64."""
    top, _ = shift_right(limbs, jnp.maximum(64 - shift, 0))  # the bits that would pass 2**64
    overflow = _any_nonzero(top)
    words, bits = shift >> 5, (shift & 31).astype(_U32)
    out = []
    for i in range(2):
        high = _limb(limbs, i - words)
        low = _limb(limbs, i - words - 1)
        spill = jnp.where(bits == 0, _U32(0), low >> (np.uint32(32) - bits))
        out.append((high << bits) | spill)
    return U64(out[0], out[1]), overflow


def _any_nonzero(limbs: Sequence[jax.Array]) -> jax.Array:
    out = limbs[0] != 0
    for x in limbs[1:]:
        out = out | (x != 0)
    return out


def pack(x: U64) -> jax.Array:
    """``x`` as one complex64 array (the limbs' bits as real and imaginary parts): a single
    output for XLA on CPU, which fuses each output of a program separately and so would
    evaluate an expensive ``x`` once per limb. :func:`unpack` inverts it bit for bit."""
    return jax.lax.complex(*(jax.lax.bitcast_convert_type(v, jnp.float32) for v in x))


def unpack(packed: jax.Array) -> U64:
    """The limbs :func:`pack` packed."""
    return U64(jax.lax.bitcast_convert_type(jnp.real(packed), _U32),
               jax.lax.bitcast_convert_type(jnp.imag(packed), _U32))
