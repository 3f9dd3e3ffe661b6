"""Top-k sparsification with error feedback.

All leaves are flattened into one vector ``a`` (plus the residual, with error feedback);
the ``k`` entries of largest magnitude are sent as values and flat indices, the rest is
zero on decode. With error feedback the unsent part ``a − sent`` becomes the residual and
is added to the next tree (Stich et al. 2018; Karimireddy et al. 2019).
Wire bytes: ``k · itemsize(values) + k · itemsize(indices)``, indices being the smallest
of uint8 / uint16 / uint32 that holds ``total_size − 1``.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import PyTreeDef

from bbjax.compression.codec import Codec, PyTree, with_byte_count

from bbjax.errors import CompressionError


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["values", "indices"],
    meta_fields=["treedef", "shapes", "dtypes"],
)
@dataclasses.dataclass(frozen=True)
class SparseTree:
    """The ``k`` sent entries (``values``, flat ``indices``) and the static structure of
    the tree they came from."""

    values: jax.Array
    indices: jax.Array
    treedef: PyTreeDef
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]


def index_dtype(size: int) -> np.dtype:
    """The smallest unsigned integer dtype holding indices ``0 .. size − 1``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise CompressionError(f"trees of {size} entries exceed uint32 indices")


def _flatten(tree: PyTree) -> tuple[jax.Array, PyTreeDef, tuple, tuple]:
    leaves, treedef = jax.tree.flatten(tree)
    for x in leaves:
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise CompressionError(f"top-k needs float leaves, got {x.dtype}")
    dtype = jnp.result_type(*leaves)
    flat = jnp.concatenate([x.reshape(-1).astype(dtype) for x in leaves])
    shapes = tuple(tuple(x.shape) for x in leaves)
    return flat, treedef, shapes, tuple(jnp.dtype(x.dtype).name for x in leaves)


def _unflatten(flat: jax.Array, treedef: PyTreeDef, shapes: tuple, dtypes: tuple) -> PyTree:
    sizes = [int(np.prod(s)) for s in shapes]
    parts = jnp.split(flat, np.cumsum(sizes)[:-1])
    return jax.tree.unflatten(
        treedef, [p.reshape(s).astype(d) for p, s, d in zip(parts, shapes, dtypes)]
    )


def top_k(k: int, error_feedback: bool = True) -> Codec:
    """Send the ``k`` largest-magnitude entries of the whole tree.

    With ``error_feedback`` the state is the residual (a tree like the template, in the
    leaves' common dtype) and
    ``decode(payload) + new_residual == tree + old_residual`` exactly. ``k`` larger than
    the tree raises :class:`CompressionError` in ``init`` (or ``encode``).
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise CompressionError(f"k must be a positive integer, got {k!r}")
    k = int(k)

    def check_size(size: int) -> None:
        if k > size:
            raise CompressionError(f"k ({k}) exceeds the tree's {size} entries")

    def init(template: PyTree) -> PyTree:
        leaves = jax.tree.leaves(template)
        check_size(sum(int(np.prod(np.shape(x))) for x in leaves))
        if not error_feedback:
            return ()
        dtype = jnp.result_type(*leaves)
        return jax.tree.map(lambda x: jnp.zeros(np.shape(x), dtype), template)

    def encode(state: PyTree, tree: PyTree, key: jax.Array | None) -> tuple[PyTree, PyTree]:
        del key
        flat, treedef, shapes, dtypes = _flatten(tree)
        check_size(flat.size)
        if error_feedback:
            flat = flat + _flatten(state)[0].astype(flat.dtype)
        _, idx = jax.lax.top_k(jnp.abs(flat), k)
        payload = SparseTree(flat[idx], idx.astype(index_dtype(flat.size)), treedef, shapes, dtypes)
        if error_feedback:
            residual_dtypes = (flat.dtype.name,) * len(shapes)
            state = _unflatten(flat.at[idx].set(0), treedef, shapes, residual_dtypes)
        return state, payload

    @jax.jit
    def decode(payload: SparseTree) -> PyTree:
        size = sum(int(np.prod(s)) for s in payload.shapes)
        dense = (
            jnp.zeros(size, payload.values.dtype)
            .at[payload.indices.astype(jnp.int32)]
            .set(payload.values)
        )
        return _unflatten(dense, payload.treedef, payload.shapes, payload.dtypes)

    return Codec(init, with_byte_count(encode), decode)
