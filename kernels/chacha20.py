"""ChaCha20 block expansion: a Pallas kernel beside its pure-jnp reference.

The block function is RFC 8439's (20 rounds of uint32 quarter-rounds) with rand_chacha's
state layout: a 64-bit block counter in words 12-13 and a zero stream id in words 14-15.
Block ``c`` of key ``k`` therefore equals pyca/cryptography's ChaCha20 keystream for key
``k`` and the 16-byte nonce ``c.to_bytes(8, "little") + bytes(8)``.

Every function here maps ``keys`` (uint32[..., 8], each key's little-endian words) and
block counters (``counter_lo``, ``counter_hi``: uint32 arrays, the low and high words),
broadcast against each other, to the blocks as 16 word planes: ``planes[w][idx]`` is word
``w`` of the block at ``idx``, keystream word ``16 * counter + w``. Separate planes of the
counters' shape let a consumer of some words fuse with the reference without materializing
the others.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from bbjax.errors import InvalidArgument

SIGMA = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)  # "expand 32-byte k"
_ROUNDS = (  # one double round: four column quarter-rounds, then four diagonal ones
    (0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
    (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14),
)
_LANES = 128


def _rotl(x: jax.Array, n: int) -> jax.Array:
    return (x << np.uint32(n)) | (x >> np.uint32(32 - n))


def _double_round(x: list[jax.Array]) -> list[jax.Array]:
    x = list(x)
    for a, b, c, d in _ROUNDS:
        x[a] = x[a] + x[b]
        x[d] = _rotl(x[d] ^ x[a], 16)
        x[c] = x[c] + x[d]
        x[b] = _rotl(x[b] ^ x[c], 12)
        x[a] = x[a] + x[b]
        x[d] = _rotl(x[d] ^ x[a], 8)
        x[c] = x[c] + x[d]
        x[b] = _rotl(x[b] ^ x[c], 7)
    return x


def block_words(key: list[jax.Array], lo: jax.Array, hi: jax.Array, *,
                rolled: bool = False) -> list[jax.Array]:
    """The 16 output words of the ChaCha20 blocks with counters ``(lo, hi)``: ``key`` is
    the 8 key words, each broadcastable against ``lo`` and ``hi`` (all uint32).

    Unrolled, the 20 rounds are one straight-line computation XLA fuses into one loop;
    ``rolled`` runs the 10 double rounds as a ``fori_loop`` instead (a kernel body that
    compiles quickly)."""
    shape = jnp.broadcast_shapes(lo.shape, hi.shape, *(k.shape for k in key))
    zero = jnp.zeros(shape, jnp.uint32)
    init = [zero + np.uint32(s) for s in SIGMA] + [zero + k for k in key]
    init += [zero + lo, zero + hi, zero, zero]
    if rolled:
        x = jax.lax.fori_loop(0, 10, lambda _, x: _double_round(x), init)
    else:
        x = init
        for _ in range(10):
            x = _double_round(x)
    return [xi + si for xi, si in zip(x, init)]


def _shape(keys: jax.Array, counter_lo: jax.Array, counter_hi: jax.Array) -> tuple[int, ...]:
    if keys.ndim < 1 or keys.shape[-1] != 8:
        raise InvalidArgument(f"chacha20: keys must be [..., 8], got {keys.shape}")
    if not all(a.dtype == jnp.uint32 for a in (keys, counter_lo, counter_hi)):
        raise InvalidArgument("chacha20: keys and counters must be uint32")
    try:
        return jnp.broadcast_shapes(keys.shape[:-1], counter_lo.shape, counter_hi.shape)
    except ValueError:
        raise InvalidArgument(f"chacha20: keys {keys.shape} and counters {counter_lo.shape}, "
                              f"{counter_hi.shape} do not broadcast") from None


def chacha20_blocks_reference(keys: jax.Array, counter_lo: jax.Array,
                              counter_hi: jax.Array) -> tuple[jax.Array, ...]:
    """Pure-jnp word planes (module docstring)."""
    shape = _shape(keys, counter_lo, counter_hi)
    words = block_words([keys[..., i] for i in range(8)], counter_lo, counter_hi)
    return tuple(jnp.broadcast_to(w, shape) for w in words)


def _kernel(*refs):
    key = [ref[...] for ref in refs[:8]]
    for ref, w in zip(refs[10:], block_words(key, refs[8][...], refs[9][...], rolled=True)):
        ref[...] = w


@functools.partial(jax.jit, static_argnames=("tile_rows", "interpret"))
def chacha20_blocks_pallas(keys: jax.Array, counter_lo: jax.Array, counter_hi: jax.Array, *,
                           tile_rows: int = 8, interpret: bool = False) -> tuple[jax.Array, ...]:
    """The same word planes as :func:`chacha20_blocks_reference`, as a Pallas kernel over
    tiles of ``tile_rows x 128`` blocks (inputs are broadcast, flattened and padded to whole
    tiles); ``interpret=True`` runs it on any backend."""
    shape = _shape(keys, counter_lo, counter_hi)
    size = math.prod(shape)
    per_tile = tile_rows * _LANES
    padded = max(1, -(-size // per_tile)) * per_tile

    def tiles(x):
        flat = jnp.broadcast_to(x, shape).reshape(-1)
        return jnp.pad(flat, (0, padded - size)).reshape(padded // _LANES, _LANES)

    ins = [tiles(keys[..., i]) for i in range(8)] + [tiles(counter_lo), tiles(counter_hi)]
    spec = pl.BlockSpec((tile_rows, _LANES), lambda i: (i, 0))
    planes = pl.pallas_call(
        _kernel,
        out_shape=(jax.ShapeDtypeStruct((padded // _LANES, _LANES), jnp.uint32),) * 16,
        grid=(padded // per_tile,),
        in_specs=[spec] * 10,
        out_specs=[spec] * 16,
        interpret=interpret,
    )(*ins)
    return tuple(p.reshape(-1)[:size].reshape(shape) for p in planes)


def chacha20_blocks(keys: jax.Array, counter_lo: jax.Array,
                    counter_hi: jax.Array) -> tuple[jax.Array, ...]:
    """The 16 word planes: the Pallas kernel on GPU and TPU, the pure-jnp reference
    elsewhere."""
    if jax.default_backend() in ("gpu", "tpu"):
        return chacha20_blocks_pallas(keys, counter_lo, counter_hi)
    return chacha20_blocks_reference(keys, counter_lo, counter_hi)
