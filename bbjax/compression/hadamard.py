"""Random Hadamard rotation in front of another codec (Suresh et al. 2017).

Each leaf is flattened, zero-padded to ``D = 2^ceil(log2 size)`` and rotated,
``y = H · (s ⊙ x) / sqrt(D)``, with ``H`` the Sylvester Hadamard matrix and ``s`` random
signs; the rotation is orthogonal, spreads a vector's energy evenly over its coordinates
(narrowing the range a quantizer must cover) and is undone on decode by
``x = s ⊙ (H · y) / sqrt(D)``. The signs come from a PRNG key sent in the payload.
Wire bytes: the key data (8 bytes for threefry) plus the inner codec's bytes on the
padded, rotated leaves.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.compression.codec import Codec, PyTree, with_byte_count

from bbjax.errors import CompressionError


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["rotation_key", "inner"],
    meta_fields=["key_impl", "shapes", "dtypes"],
)
@dataclasses.dataclass(frozen=True)
class RotatedPayload:
    """The rotation's key data (uint32), the inner codec's payload, and the static key
    implementation, shapes and dtypes of the original leaves."""

    rotation_key: jax.Array
    inner: PyTree
    key_impl: str
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]


_H2 = np.array([[1.0, 1.0], [1.0, -1.0]], np.float32)


@jax.jit
def fwht(x: jax.Array) -> jax.Array:
    """Unnormalized fast Walsh–Hadamard transform ``H · x`` of a vector whose length is a
    power of two (Sylvester order, as ``scipy.linalg.hadamard``): ``log2 D`` butterfly
    stages of ``D`` additions each."""
    d = x.shape[0]
    h = 1
    while h < d:
        pairs = x.reshape(d // (2 * h), 2, h)
        x = jnp.einsum("ij,bjh->bih", _H2, pairs, precision=jax.lax.Precision.HIGHEST).reshape(d)
        h *= 2
    return x


def padded_size(size: int) -> int:
    """``2^ceil(log2 size)`` (1 for sizes 0 and 1)."""
    return 1 << max(0, (size - 1).bit_length())


def _rotate(x: jax.Array, signs: jax.Array) -> jax.Array:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise CompressionError(f"hadamard_rotation needs float leaves, got {x.dtype}")
    d = signs.shape[0]
    flat = jnp.pad(x.reshape(-1).astype(jnp.float32), (0, d - x.size))
    return fwht(signs * flat) / math.sqrt(d)


def _unrotate(y: jax.Array, signs: jax.Array, shape: tuple[int, ...], dtype: str) -> jax.Array:
    x = signs * fwht(y) / math.sqrt(y.shape[0])
    return x[: int(np.prod(shape))].reshape(shape).astype(dtype)


def _leaf_signs(key: jax.Array, shapes: tuple[tuple[int, ...], ...]) -> list[jax.Array]:
    sizes = [padded_size(int(np.prod(s))) for s in shapes]
    signs = jax.random.rademacher(key, (sum(sizes),), jnp.float32)
    return jnp.split(signs, np.cumsum(sizes)[:-1])


def hadamard_rotation(codec: Codec) -> Codec:
    """``codec`` applied to randomly rotated leaves; ``encode`` needs a key."""

    def rotated_template(template: PyTree) -> PyTree:
        return jax.tree.map(
            lambda x: jnp.zeros(padded_size(int(np.prod(np.shape(x)))), jnp.float32), template
        )

    def init(template: PyTree) -> PyTree:
        return codec.init(rotated_template(template))

    def encode(state: PyTree, tree: PyTree, key: jax.Array | None) -> tuple[PyTree, PyTree]:
        if key is None:
            raise CompressionError("hadamard_rotation needs a PRNG key for its random signs")
        if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.wrap_key_data(key)
        rotation_key, inner_key = jax.random.split(key)
        leaves, treedef = jax.tree.flatten(tree)
        shapes = tuple(tuple(x.shape) for x in leaves)
        signs = _leaf_signs(rotation_key, shapes)
        rotated = jax.tree.unflatten(treedef, [_rotate(x, s) for x, s in zip(leaves, signs)])
        state, inner, _ = codec.encode(state, rotated, inner_key)
        payload = RotatedPayload(
            jax.random.key_data(rotation_key),
            inner,
            str(jax.random.key_impl(rotation_key)),
            shapes,
            tuple(jnp.dtype(x.dtype).name for x in leaves),
        )
        return state, payload

    @jax.jit
    def decode(payload: RotatedPayload) -> PyTree:
        rotation_key = jax.random.wrap_key_data(payload.rotation_key, impl=payload.key_impl)
        signs = _leaf_signs(rotation_key, payload.shapes)
        rotated, treedef = jax.tree.flatten(codec.decode(payload.inner))
        return jax.tree.unflatten(
            treedef,
            [
                _unrotate(y, s, shape, d)
                for y, s, shape, d in zip(rotated, signs, payload.shapes, payload.dtypes)
            ],
        )

    return Codec(init, with_byte_count(encode), decode)
