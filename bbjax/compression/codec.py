"""The codec interface and the byte count of a payload."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np


PyTree = Any



class Codec(NamedTuple):
    """A lossy encoding of a pytree of float arrays for the wire.

    ``init(template)`` gives the sender's state for trees shaped like ``template``.
    ``encode(state, tree, key) -> (state, payload, num_bytes)``: ``payload`` is a pytree of
    arrays that is exactly what travels and ``num_bytes`` its size on the wire (a Python
    int: the raw bytes of the payload arrays, see :func:`payload_bytes`). ``key`` is used
    by randomized codecs and ignored by the others. ``decode(payload)`` rebuilds the tree.
    All three are pure and jittable; ``encode``/``decode`` vmap over senders.
    """

    init: Callable[[PyTree], PyTree]
    encode: Callable[[PyTree, PyTree, jax.Array | None], tuple[PyTree, PyTree, int]]
    decode: Callable[[PyTree], PyTree]


def with_byte_count(
    encode_arrays: Callable[[PyTree, PyTree, jax.Array | None], tuple[PyTree, PyTree]],
) -> Callable[[PyTree, PyTree, jax.Array | None], tuple[PyTree, PyTree, int]]:
    """``encode`` from a function returning ``(state, payload)``: jitted, plus the byte count."""
    encode_arrays = jax.jit(encode_arrays)

    def encode(
        state: PyTree, tree: PyTree, key: jax.Array | None = None
    ) -> tuple[PyTree, PyTree, int]:
        state, payload = encode_arrays(state, tree, key)
        return state, payload, payload_bytes(payload)

    return encode


def payload_bytes(payload: PyTree) -> int:
    """Raw bytes of all arrays in ``payload`` (``size × itemsize`` each; shapes and dtypes
    are static, so this is a Python int even for traced arrays)."""
    return sum(
        int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(payload)
    )
