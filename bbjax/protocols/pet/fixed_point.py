"""xaynet's fixed-point encoding ``floor((clamp(s' w, -B, B) + B) E)``, exactly, in limbs.

The masker reads every float32 (or int32) input as the exact rational it stands for, as the
exact reference does. Here a value is ``sign * m * 2**e`` with an integer mantissa ``m <
2**32``; the product ``s' w`` times ``E = odd * 2**twos`` is the integer ``m_s m_w odd``
(below 2**88, three uint32 limbs) shifted by ``e_s + e_w + twos`` bits, so the floor (and
the ceiling, for negative products) is a 96-bit shift with a sticky bit. Clamping to
``[-B, B]`` is saturating at ``B E``: ``floor((v + B) E) = B E + min(floor(|v| E), B E)``
for ``v >= 0`` and ``B E - min(ceil(|v| E), B E)`` for ``v < 0``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.errors import MaskingError
from bbjax.protocols.pet import limbs
from bbjax.protocols.pet.config import MaskConfig
from bbjax.protocols.pet.limbs import U64

_U32 = jnp.uint32


class FixedPoint(NamedTuple):
    """One config's encoding constants (array leaves, so one compiled program serves
    every config): the bound ``B`` (float32 and uint32), ``B * E`` and ``E = odd *
    2**twos``."""

    bound: jax.Array
    bound_int: jax.Array
    bound_scaled: U64
    odd: jax.Array
    twos: jax.Array


def fixed_point(config: MaskConfig) -> FixedPoint:
    """The encoding constants of ``config``; a :class:`MaskingError` if its bound is no
    integer below 2**24, or ``B * E`` or ``E``'s odd part does not fit (none of xaynet's
    configs with an order below 2**64 is refused)."""
    b, e = config.add_shift, config.exp_shift
    if b.denominator != 1 or not 0 < b.numerator < 2**24:
        raise MaskingError(f"mask config {config}: bound {b} is not an integer below 2**24")
    twos = (e & -e).bit_length() - 1
    odd = e >> twos
    if odd >= 2**32 or 2 * b.numerator * e >= 2**64:
        raise MaskingError(f"mask config {config}: precision {e} does not fit 64-bit limbs")
    return FixedPoint(np.float32(b.numerator), np.uint32(b.numerator),
                      limbs.u64_from_ints(b.numerator * e), np.uint32(odd), np.int32(twos))


def float_parts(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Finite float32 ``x`` as ``(negative, m, e)`` with ``|x| = m * 2**e`` exactly."""
    u = jax.lax.bitcast_convert_type(x, _U32)
    biased = ((u >> 23) & 0xFF).astype(jnp.int32)
    frac = u & np.uint32(0x7FFFFF)
    normal = biased != 0
    m = jnp.where(normal, frac | np.uint32(0x800000), frac)
    e = jnp.where(normal, biased - 150, -149)
    return (u >> 31) == 1, m, e


def int_parts(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """int32 ``x`` as ``(negative, |x|, 0)``."""
    u = jax.lax.bitcast_convert_type(x, _U32)
    negative = x < 0
    return negative, jnp.where(negative, _U32(0) - u, u), jnp.zeros(x.shape, jnp.int32)


def clamped_scalar(s: jax.Array, unit: FixedPoint) -> tuple[jax.Array, jax.Array]:
    """``min(s, B1)`` of a finite, non-negative float32 ``s`` as ``(m, e)``."""
    _, m, e = float_parts(s)
    over = s >= unit.bound
    return jnp.where(over, unit.bound_int, m), jnp.where(over, 0, e)


def encode(negative: jax.Array, m_s: jax.Array, e_s: jax.Array, m_w: jax.Array, e_w: jax.Array,
           fp: FixedPoint) -> U64:
    """``floor((clamp(p, -B, B) + B) E)`` of ``p = (-1)**negative m_s m_w 2**(e_s + e_w)``
    (``m_s, m_w`` uint32 with ``m_s < 2**24``, ``e_s, e_w`` int32)."""
    x = limbs.mul_u64_u32(limbs.mul_wide(m_s, m_w), fp.odd)
    k = e_s + e_w + fp.twos
    right = k < 0
    kept, inexact = limbs.shift_right(x, jnp.where(right, -k, 0))
    floor_r = U64(kept[0], kept[1])
    ceil_r, carry = limbs.add(floor_r, U64(inexact.astype(_U32), jnp.zeros_like(kept[0])))
    over_r = kept[2] != 0
    left, over_l = limbs.shift_left_64(x, jnp.where(right, 0, k))
    be = U64(*(jnp.broadcast_to(v, k.shape) for v in fp.bound_scaled))
    floor_v = _saturate(limbs.where(right, floor_r, left), jnp.where(right, over_r, over_l), be)
    ceil_v = _saturate(limbs.where(right, ceil_r, left), jnp.where(right, over_r | carry, over_l), be)
    up, _ = limbs.add(be, floor_v)
    return limbs.where(negative, limbs.sub(be, ceil_v), up)


def _saturate(v: U64, overflow: jax.Array, cap: U64) -> U64:
    return limbs.where(overflow | ~limbs.less(v, cap), cap, v)
