"""xaynet's ``generate_integer`` over whole keystreams at once: vectorized rejection sampling.

A draw below a group order ``q`` with ``5 <= len(q.to_bytes_le()) <= 8`` bytes consumes two
keystream words (rand_core's whole-word ``fill_bytes``), so each 16-word ChaCha20 block
holds 8 candidates ``(w[2i], w[2i + 1] & hi_mask)``, tried in order. A mask is the unit's
draw (the first candidate below ``q1``) followed by ``length`` draws below ``q`` from the
candidates after it.

:func:`sample` draws every participant's mask at once, in two passes over the keystream:

1. A ``lax.while_loop`` scans ``chunk_blocks`` blocks per step until every participant has
   its unit and ``length`` accepted candidates. Each block yields only its two 8-bit
   acceptance masks (below ``q`` and below ``q1``); per pair of blocks, a prefix sum of the
   accepted counts gives the output position of the pair's first accepted candidate, where
   a scatter records the pair (and how many of its candidates lie in its first block).
2. Each output finds its pair (at most 15 positions back), recomputes the one block that
   holds its candidate and takes the accepted candidate of its rank there.

Recomputing a block (64 bytes of keystream per output) is cheaper on CPU than keeping the
keystream, which XLA there would evaluate once per word. For the same reason both passes
run inside ``lax.cond`` branches, whose results XLA materializes (it would otherwise fuse
the keystream into each of its consumers again), and on CPU the outputs' two limbs leave
their branch packed as one complex64 (:func:`~bbjax.protocols.pet.limbs.pack`).
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


def _after(bits: jax.Array, index: jax.Array, first: jax.Array, width: int) -> jax.Array:
    """``bits`` of the groups of ``width`` candidates starting at candidate ``index``,
    without the candidates up to candidate ``first`` (all of them while ``first`` is -1)."""
    cut = first - index  # candidates of this group to drop, minus one
    keep = jnp.where(cut >= width - 1, 0, ~((_U32(2) << jnp.clip(cut, 0, 31).astype(_U32)) - 1))
    return jnp.where((first < 0) | (cut >= width - 1), 0, jnp.where(cut < 0, bits, bits & keep))


def _lowest_bit(bits: jax.Array) -> jax.Array:
    return jax.lax.population_count((bits & (_U32(0) - bits)) - 1).astype(jnp.int32)


def _prefix_sum(x: jax.Array, taps: int = 16) -> jax.Array:
    """Inclusive prefix sums of int32 ``x`` along axis 1: sums within runs of ``taps``
    elements (one fused pass), then the runs' totals, recursively (faster on CPU than
    ``jnp.cumsum``'s windowed reductions)."""
    n, m = x.shape
    if m <= taps:
        return jnp.cumsum(x, axis=1)
    runs = -(-m // taps)
    xp = jnp.pad(x, ((0, 0), (0, runs * taps - m))).reshape(n, runs, taps)
    at = jnp.arange(taps)
    local = sum(jnp.where(at >= t, xp[..., t : t + 1], 0) for t in range(taps))
    totals = local[..., -1]
    return (local + (_prefix_sum(totals, taps) - totals)[..., None]).reshape(n, -1)[:, :m]


def _positions(keys: jax.Array, vect: Draw, unit: Draw, length: int,
               chunk_pairs: int) -> tuple[jax.Array, jax.Array]:
    """Each key's unit candidate index (int32[N]) and, for every output position holding
    the first accepted vector candidate of a pair of blocks, ``16 * pair + accepted
    candidates in the pair's first block`` (int32[N, length]; -1 elsewhere)."""
    n = keys.shape[0]
    rows = jnp.arange(n)[:, None]
    offsets = jnp.arange(chunk_pairs, dtype=_U32)

    def masks(start):
        block = jnp.broadcast_to(2 * start + jnp.arange(2 * chunk_pairs, dtype=_U32), (n, 2 * chunk_pairs))
        words = chacha20.blocks(keys, block)
        return _accept_bits(words, vect) | (_accept_bits(words, unit) << 8)

    def needed(first, count):
        return (first < 0).any() | (count < length).any()

    def scan(state):
        start, first, count, starts = state
        per_block = jax.lax.cond(needed(first, count), masks,
                                 lambda _: jnp.zeros((n, 2 * chunk_pairs), _U32), start)
        per_block = per_block.reshape(n, chunk_pairs, 2)
        both = per_block[..., 0] | (per_block[..., 1] << 16)
        unit_bits = ((both >> 8) & 0xFF) | ((both >> 16) & 0xFF00)
        hit = unit_bits != 0
        at = jnp.argmax(hit, axis=1)
        slot = _lowest_bit(jnp.take_along_axis(unit_bits, at[:, None], axis=1)[:, 0])
        index = (start.astype(jnp.int32) + at.astype(jnp.int32)) * 16 + slot
        first = jnp.where((first < 0) & hit.any(axis=1), index, first)
        pair = (start + offsets).astype(jnp.int32)[None, :]
        bits = _after((both & 0xFF) | ((both >> 8) & 0xFF00), 16 * pair, first[:, None], 16)
        pop = jax.lax.population_count(bits).astype(jnp.int32)
        upto = count[:, None] + _prefix_sum(pop)
        before = upto - pop
        target = jnp.where((pop > 0) & (before < length), before, length)
        value = 16 * pair + jax.lax.population_count(bits & 0xFF).astype(jnp.int32)
        starts = starts.at[rows, target].set(value, mode="drop")
        return start + chunk_pairs, first, upto[:, -1], starts

    init = (_U32(0), jnp.full((n,), -1, jnp.int32), jnp.zeros((n,), jnp.int32),
            jnp.full((n, length), -1, jnp.int32))
    _, first, _, starts = jax.lax.while_loop(lambda s: needed(s[1], s[2]), scan, init)
    return first, starts


def sample(keys: jax.Array, vect: Draw, unit: Draw, length: int, chunk_blocks: int,
           finish: Callable[[U64, jax.Array], U64] | None = None) -> U64:
    """Every key's mask: U64 [N, length + 1], the vector draws then the unit's draw in the
    last column (as ``MaskSeed.derive_mask``). ``finish(draws, is_unit)``, if given, maps
    the draws elementwise (``is_unit``: bool [1, length + 1], true in the last column).
    A scan step covers ``chunk_blocks`` keystream blocks (rounded up to pairs) per key."""
    n = keys.shape[0]
    first, starts = _positions(keys, vect, unit, length, -(-chunk_blocks // 2))
    # a pair holds at most 16 accepted candidates, so each output's pair starts at most 15
    # positions before it; the unit's column looks at its own entry only
    marks = jnp.concatenate([jnp.full((n, 15), -1, jnp.int32), starts,
                             jnp.full((n, 1), -1, jnp.int32)], axis=1)
    is_unit = jnp.arange(length + 1)[None, :] == length

    def values(marks):
        entry = jnp.full((n, length + 1), -1, jnp.int32)
        rank = jnp.zeros((n, length + 1), jnp.int32)  # outputs since the pair's first one
        for t in reversed(range(16)):  # the nearest start at or before each output wins
            mark = marks[:, 15 - t : 15 - t + length + 1]
            entry = jnp.where(mark >= 0, mark, entry)
            rank = jnp.where(mark >= 0, t, rank)
        second = rank >= (entry & 15)  # in the pair's second block
        block = 2 * (entry >> 4) + second.astype(jnp.int32)
        rank = jnp.where(second, rank - (entry & 15), rank)
        block = jnp.where(is_unit, first[:, None] >> 3, block)
        words = chacha20.blocks(keys, block.astype(_U32))
        bits = _after(_accept_bits(words, vect), 8 * block, first[:, None], 8)
        bits = jnp.where(is_unit, _U32(1) << (first[:, None] & 7).astype(_U32), bits)
        rank = jnp.where(is_unit, 0, rank)
        draws = U64(jnp.zeros(bits.shape, _U32), jnp.zeros(bits.shape, _U32))
        seen = jnp.zeros(bits.shape, jnp.int32)
        for i, c in enumerate(_candidates(words, jnp.where(is_unit, unit.hi_mask, vect.hi_mask))):
            hit = ((bits >> i) & 1) == 1
            draws = limbs.where(hit & (seen == rank), c, draws)
            seen = seen + hit.astype(jnp.int32)
        out = draws if finish is None else finish(draws, is_unit)
        return limbs.pack(out) if packed else out

    packed = jax.default_backend() == "cpu"  # elsewhere XLA fuses both limbs into one kernel
    zeros = jnp.zeros((n, length + 1), jnp.complex64 if packed else _U32)
    out = jax.lax.cond((first >= 0).all(), values,
                       lambda _: zeros if packed else U64(zeros, zeros), marks)
    return limbs.unpack(out) if packed else out
