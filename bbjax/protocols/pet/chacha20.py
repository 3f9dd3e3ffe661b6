"""The ChaCha20 keystream of mask seeds in JAX: rand_chacha's ``ChaCha20Rng::from_seed``.

A seed's 32 bytes are the key (8 little-endian uint32 words), the block counter is 64-bit
and the stream id 0, so the keystream is pyca/cryptography's ChaCha20 with a 16-byte
all-zero nonce. Blocks come from :func:`kernels.chacha20.chacha20_blocks` (the Pallas kernel
on GPU and TPU, the pure-jnp reference elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.errors import MaskingError
from bbjax.protocols.pet.seed import MaskSeed
from kernels.chacha20 import chacha20_blocks

SEED_WORDS = 8


def seed_words(seeds: Sequence[MaskSeed | bytes] | np.ndarray) -> np.ndarray:
    """Mask seeds (``MaskSeed`` or 32 bytes each, or a uint8 array [N, 32]) as ChaCha20 key
    words, uint32[N, 8]."""
    if isinstance(seeds, np.ndarray):
        if seeds.dtype != np.uint8 or seeds.ndim != 2 or seeds.shape[1] != 32:
            raise MaskingError(f"seeds: expected uint8[N, 32], got {seeds.dtype}{list(seeds.shape)}")
        raw = seeds.tobytes()
    else:
        parts = []
        for i, seed in enumerate(seeds):
            value = seed.as_bytes() if isinstance(seed, MaskSeed) else seed
            if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
                raise MaskingError(f"seeds[{i}]: expected a MaskSeed or 32 bytes, got {seed!r:.60}")
            parts.append(bytes(value))
        raw = b"".join(parts)
    return np.frombuffer(raw, "<u4").astype(np.uint32).reshape(-1, SEED_WORDS)


def blocks(keys: jax.Array, counters: jax.Array) -> tuple[jax.Array, ...]:
    """The blocks at ``counters`` (uint32[N, ...], below 2**32) of each participant's key
    (keys uint32[N, 8]) as 16 word planes of the counters' shape."""
    key = keys.reshape(keys.shape[:1] + (1,) * (counters.ndim - 1) + keys.shape[1:])
    return chacha20_blocks(key, counters, jnp.zeros_like(counters))


def keystream(keys: jax.Array, n_words: int, start_block: int = 0) -> jax.Array:
    """The first ``n_words`` keystream words of each key from block ``start_block`` on
    (uint32[N, n_words]); ``start_block`` may be any 64-bit counter."""
    if not isinstance(n_words, int) or n_words < 1:
        raise MaskingError(f"n_words must be a positive int, got {n_words!r}")
    if not isinstance(start_block, int) or not 0 <= start_block < 2**64:
        raise MaskingError(f"start_block must be an int in [0, 2**64), got {start_block!r}")
    keys = jnp.asarray(keys, jnp.uint32)
    offset = jnp.arange(-(-n_words // 16), dtype=jnp.uint32)
    lo = jnp.uint32(start_block & 0xFFFFFFFF) + offset
    hi = jnp.uint32(start_block >> 32) + (lo < offset).astype(jnp.uint32)
    planes = chacha20_blocks(keys[:, None, :], lo[None, :], hi[None, :])
    return jnp.stack(planes, axis=-1).reshape(keys.shape[0], -1)[:, :n_words]
