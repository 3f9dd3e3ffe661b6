"""xaynet's ``generate_integer`` over whole keystreams at once: vectorized rejection sampling.

A draw below a group order ``q`` with ``5 <= len(q.to_bytes_le()) <= 8`` bytes consumes two
keystream words (rand_core's whole-word ``fill_bytes``), so each 16-word ChaCha20 block
holds 8 candidates ``(w[2i], w[2i + 1] & hi_mask)``, tried in order. A mask is the unit's
draw (the first candidate below ``q1``) followed by ``length`` draws below ``q`` from the
candidates after it.

:func:`sample` draws every participant's mask at once. A ``lax.while_loop`` scans
``chunk_blocks`` blocks per step until every participant has its unit and ``length``
accepted candidates, keeping per block only its two 8-bit acceptance masks; blocks with
accepted candidates are compacted into output positions (prefix sum + scatter). Then each
output recomputes its block and takes the accepted candidate of its rank there: 64 bytes of
keystream per output is cheaper than materializing the keystream, which XLA on CPU would
evaluate once per word.

Two XLA-on-CPU measures keep each keystream evaluation in one fused loop: the scan step and
the outputs are computed inside ``lax.cond`` branches (whose results XLA materializes; it
would otherwise re-fuse the keystream into every consumer), and the outputs' two limbs
leave their branch packed as one complex64 (:func:`~bbjax.protocols.pet.limbs.pack`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.errors import MaskingError
from bbjax.protocols.pet import chacha20, limbs
from bbjax.protocols.pet.limbs import U64

CANDIDATES_PER_BLOCK = 8
_U32 = jnp.uint32


class Draw(NamedTuple):
    """One group's draw constants (array leaves): its order and the mask that keeps the
    draw's bytes of a candidate's second word."""

    order: U64
    hi_mask: jax.Array


def draw(order: int) -> Draw:
    """The draw constants of a group of order ``order`` (2**32 < order < 2**64)."""
    if not 2**32 < order < 2**64:
        raise MaskingError(f"group order {order} is outside (2**32, 2**64): no two-word draw")
    nbytes = (order.bit_length() + 7) // 8
    return Draw(limbs.u64_from_ints(order), np.uint32((1 << (8 * nbytes - 32)) - 1))


def acceptance(order: int) -> float:
    """The probability that one candidate is accepted: ``order / 2**(8 * bytes)``."""
    return order / 2 ** (8 * ((order.bit_length() + 7) // 8))


def blocks_for(count: int, accept: float) -> int:
    """Blocks that hold ``count`` accepted candidates except with probability ~1e-9."""
    expected = count / accept
    spread = 6.5 * math.sqrt(count * (1 - accept)) / accept + 24 / accept
    return max(1, math.ceil((expected + spread) / CANDIDATES_PER_BLOCK) + 1)


def _candidates(words: Sequence[jax.Array], hi_mask: jax.Array) -> list[U64]:
    return [U64(words[2 * i], words[2 * i + 1] & hi_mask) for i in range(CANDIDATES_PER_BLOCK)]


def _accept_bits(words: Sequence[jax.Array], d: Draw) -> jax.Array:
    """uint32 with bit ``i`` set where candidate ``i`` of the blocks (16 word planes) is
    below ``d``'s order."""
    bits = jnp.zeros(words[0].shape, _U32)
    for i, c in enumerate(_candidates(words, d.hi_mask)):
        bits = bits | (limbs.less(c, d.order).astype(_U32) << i)
    return bits


def _after(bits: jax.Array, block: jax.Array, first: jax.Array) -> jax.Array:
    """``bits`` of blocks ``block`` without the candidates up to candidate index ``first``
    (all of them while ``first`` is -1, not found yet)."""
    first_block = (first >> 3).astype(_U32)
    keep = ~((_U32(2) << (first & 7).astype(_U32)) - 1)
    bits = jnp.where(block == first_block, bits & keep, jnp.where(block < first_block, 0, bits))
    return jnp.where(first < 0, 0, bits)


def _lowest_bit(bits: jax.Array) -> jax.Array:
    return jax.lax.population_count((bits & (_U32(0) - bits)) - 1).astype(jnp.int32)


def _positions(keys: jax.Array, vect: Draw, unit: Draw, length: int,
               chunk_blocks: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Each key's unit candidate index (int32[N]) and, for output ``j < length``, the
    block (int32[N, length]) holding its accepted candidate and its rank there."""
    n = keys.shape[0]
    rows = jnp.arange(n)[:, None]
    offsets = jnp.arange(chunk_blocks, dtype=_U32)

    def masks(start):
        words = chacha20.blocks(keys, jnp.broadcast_to(start + offsets, (n, chunk_blocks)))
        return _accept_bits(words, vect) | (_accept_bits(words, unit) << 8)

    def needed(first, count):
        return (first < 0).any() | (count < length).any()

    def scan(state):
        start, first, count, starts = state
        both = jax.lax.cond(needed(first, count), masks, lambda _: jnp.zeros((n, chunk_blocks), _U32),
                            start)
        unit_bits = both >> 8
        hit = unit_bits != 0
        at = jnp.argmax(hit, axis=1)
        slot = _lowest_bit(jnp.take_along_axis(unit_bits, at[:, None], axis=1)[:, 0])
        index = (start.astype(jnp.int32) + at.astype(jnp.int32)) * CANDIDATES_PER_BLOCK + slot
        first = jnp.where((first < 0) & hit.any(axis=1), index, first)
        block = start + offsets[None, :]
        bits = _after(both & 0xFF, block, first[:, None])
        pop = jax.lax.population_count(bits).astype(jnp.int32)
        upto = count[:, None] + jnp.cumsum(pop, axis=1)
        before = upto - pop
        target = jnp.where((pop > 0) & (before < length), before, length)
        starts = starts.at[rows, target].set(block.astype(jnp.int32), mode="drop")
        return start + chunk_blocks, first, upto[:, -1], starts

    init = (_U32(0), jnp.full((n,), -1, jnp.int32), jnp.zeros((n,), jnp.int32),
            jnp.full((n, length), -1, jnp.int32))
    _, first, _, starts = jax.lax.while_loop(lambda s: needed(s[1], s[2]), scan, init)
    iota = jnp.arange(length, dtype=jnp.int32)[None, :]
    begin = jax.lax.cummax(jnp.where(starts >= 0, iota, -1), axis=1)
    return first, jnp.take_along_axis(starts, begin, axis=1), iota - begin


def sample(keys: jax.Array, vect: Draw, unit: Draw, length: int, chunk_blocks: int,
           finish: Callable[[U64, jax.Array], U64] | None = None) -> U64:
    """Every key's mask: U64 [N, length + 1], the vector draws then the unit's draw in the
    last column (as ``MaskSeed.derive_mask``). ``finish(draws, is_unit)``, if given, maps
    the draws elementwise (``is_unit``: bool [1, length + 1], true in the last column)."""
    n = keys.shape[0]
    first, block, rank = _positions(keys, vect, unit, length, chunk_blocks)
    block = jnp.concatenate([block, (first >> 3)[:, None]], axis=1)
    rank = jnp.concatenate([rank, jnp.zeros((n, 1), jnp.int32)], axis=1)
    is_unit = jnp.arange(length + 1)[None, :] == length

    def values(block, rank):
        words = chacha20.blocks(keys, block.astype(_U32))
        bits = _after(_accept_bits(words, vect), block.astype(_U32), first[:, None])
        bits = jnp.where(is_unit, _U32(1) << (first[:, None] & 7).astype(_U32), bits)
        draws = U64(jnp.zeros(bits.shape, _U32), jnp.zeros(bits.shape, _U32))
        seen = jnp.zeros(bits.shape, jnp.int32)
        for i, c in enumerate(_candidates(words, jnp.where(is_unit, unit.hi_mask, vect.hi_mask))):
            hit = ((bits >> i) & 1) == 1
            draws = limbs.where(hit & (seen == rank), c, draws)
            seen = seen + hit.astype(jnp.int32)
        return limbs.pack(draws if finish is None else finish(draws, is_unit))

    packed = jax.lax.cond((first >= 0).all(), values,
                          lambda *_: jnp.zeros((n, length + 1), jnp.complex64), block, rank)
    return limbs.unpack(packed)
