"""b-bit quantization of every leaf on a uniform grid between its min and max.

A leaf ``x`` with ``lo = min x``, ``hi = max x`` and ``L = 2^b − 1`` is sent as the codes
``q_j ∈ {0..L}`` of ``u_j = (x_j − lo) · L / (hi − lo)``, bit-packed, plus ``lo`` and
``hi`` as float32; it decodes to ``lo + q_j · (hi − lo) / L``. Uniform quantization takes
the nearest code; stochastic quantization rounds ``u_j`` up with probability
``u_j − ⌊u_j⌋``, so ``E[q_j] = u_j`` and the decoded leaf is unbiased.
Wire bytes per leaf: ``ceil(size · b / 8) + 8``.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.compression.codec import Codec, PyTree, with_byte_count

from bbjax.errors import CompressionError

MAX_BITS = 16


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["packed", "low", "high"],
    meta_fields=["shape", "dtype"],
)
@dataclasses.dataclass(frozen=True)
class QuantizedArray:
    """One quantized leaf: bit-packed codes (uint8), ``low``/``high`` (float32 scalars) and
    the leaf's static ``shape`` and ``dtype`` (name)."""

    packed: jax.Array
    low: jax.Array
    high: jax.Array
    shape: tuple[int, ...]
    dtype: str


@functools.partial(jax.jit, static_argnames="bits")
def pack_bits(codes: jax.Array, bits: int) -> jax.Array:
    """Pack 1-D ``codes < 2^bits`` into ``ceil(len · bits / 8)`` bytes, least significant
    bit first (as ``np.packbits(..., bitorder="little")`` on the codes' bits)."""
    shifts = jnp.arange(bits, dtype=jnp.uint32)
    stream = ((codes.astype(jnp.uint32)[:, None] >> shifts) & 1).astype(jnp.uint8).reshape(-1)
    stream = jnp.pad(stream, (0, -stream.size % 8)).reshape(-1, 8)
    return jnp.sum(stream << jnp.arange(8, dtype=jnp.uint8), axis=1, dtype=jnp.uint8)


@functools.partial(jax.jit, static_argnames=("bits", "count"))
def unpack_bits(packed: jax.Array, bits: int, count: int) -> jax.Array:
    """The ``count`` uint32 codes that :func:`pack_bits` packed into ``packed``."""
    stream = ((packed[:, None] >> jnp.arange(8, dtype=jnp.uint8)) & 1).reshape(-1)[: count * bits]
    shifts = jnp.arange(bits, dtype=jnp.uint32)
    return jnp.sum(
        stream.reshape(count, bits).astype(jnp.uint32) << shifts, axis=1, dtype=jnp.uint32
    )


def _quantize(x: jax.Array, bits: int, uniforms: jax.Array | None) -> QuantizedArray:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise CompressionError(f"quantization needs float leaves, got {x.dtype}")
    flat = x.reshape(-1).astype(jnp.float32)
    if flat.size == 0:
        low = high = jnp.float32(0.0)
    else:
        low, high = jnp.min(flat), jnp.max(flat)
    levels = 2**bits - 1
    span = high - low
    u = (flat - low) * jnp.where(span > 0, levels / span, 0.0)
    if uniforms is None:
        q = jnp.round(u)
    else:
        floor = jnp.floor(u)
        q = floor + (uniforms < u - floor)
    codes = jnp.clip(q, 0, levels).astype(jnp.uint32)
    return QuantizedArray(
        pack_bits(codes, bits), low, high, tuple(x.shape), jnp.dtype(x.dtype).name
    )


def _dequantize(leaf: QuantizedArray, bits: int) -> jax.Array:
    count = int(np.prod(leaf.shape))
    codes = unpack_bits(leaf.packed, bits, count).astype(jnp.float32)
    step = (leaf.high - leaf.low) / (2**bits - 1)
    return (leaf.low + codes * step).reshape(leaf.shape).astype(leaf.dtype)


def _check_bits(bits: int) -> int:
    if (
        isinstance(bits, bool)
        or not isinstance(bits, numbers.Integral)
        or not 1 <= bits <= MAX_BITS
    ):
        raise CompressionError(f"bits must be an integer in [1, {MAX_BITS}], got {bits!r}")
    return int(bits)


def _quantization(bits: int, stochastic: bool) -> Codec:
    bits = _check_bits(bits)

    def init(template: PyTree) -> PyTree:
        del template
        return ()

    def encode(state: PyTree, tree: PyTree, key: jax.Array | None) -> tuple[PyTree, PyTree]:
        leaves, treedef = jax.tree.flatten(tree)
        if stochastic:
            if key is None:
                raise CompressionError("stochastic quantization needs a PRNG key")
            sizes = [int(np.prod(np.shape(x))) for x in leaves]
            uniforms = jnp.split(jax.random.uniform(key, (sum(sizes),)), np.cumsum(sizes)[:-1])
        else:
            uniforms = [None] * len(leaves)
        payload = jax.tree.unflatten(
            treedef, [_quantize(x, bits, r) for x, r in zip(leaves, uniforms)]
        )
        return state, payload

    @jax.jit
    def decode(payload: PyTree) -> PyTree:
        return jax.tree.map(
            lambda leaf: _dequantize(leaf, bits),
            payload,
            is_leaf=lambda n: isinstance(n, QuantizedArray),
        )

    return Codec(init, with_byte_count(encode), decode)


def uniform_quantization(bits: int) -> Codec:
    """Deterministic b-bit quantization: each value to the nearest of ``2^b`` levels."""
    return _quantization(bits, stochastic=False)


def stochastic_quantization(bits: int) -> Codec:
    """Unbiased b-bit quantization with stochastic rounding; ``encode`` needs a key."""
    return _quantization(bits, stochastic=True)
