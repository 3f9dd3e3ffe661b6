"""Per-stage pytrees of different structures packed into one row per dtype.

Stage ``s``'s tree becomes ``{dtype name: 1-D array}``: its leaves of that dtype raveled
and concatenated, zero-padded to the widest stage. Every stage's row then has the same
shapes, so the rows of all stages stack into ``[P, width]`` arrays that shard over the
``"stage"`` axis (each device holds its own stage's row), and a ``lax.switch`` branch per
stage unpacks its own structure from its row. Dtypes are kept, so nothing is rounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
Rows = dict[str, jax.Array]


@dataclass(frozen=True)
class Packing:
    """The layout of one tree per stage: ``treedefs[s]``, ``leaves[s]`` (each leaf's
    dtype name, shape and offset in its dtype's row) and ``widths`` (each row's length)."""

    treedefs: tuple[Any, ...]
    leaves: tuple[tuple[tuple[str, tuple[int, ...], int], ...], ...]
    widths: dict[str, int]

    def pack(self, s: int, tree: PyTree) -> Rows:
        """Stage ``s``'s ``tree`` as its rows (jittable)."""
        parts: dict[str, list[jax.Array]] = {name: [] for name in self.widths}
        for leaf in jax.tree.leaves(tree):
            leaf = jnp.asarray(leaf)
            parts[leaf.dtype.name].append(leaf.reshape(-1))
        rows = {}
        for name, width in self.widths.items():
            row = jnp.concatenate(parts[name]) if parts[name] else jnp.zeros((0,), name)
            rows[name] = jnp.pad(row, (0, width - row.shape[0]))
        return rows

    def unpack(self, s: int, rows: Rows) -> PyTree:
        """Stage ``s``'s tree read back from its ``rows`` (jittable)."""
        leaves = [rows[name][offset:offset + int(np.prod(shape))].reshape(shape)
                  for name, shape, offset in self.leaves[s]]
        return jax.tree.unflatten(self.treedefs[s], leaves)

    def stack(self, trees: Sequence[PyTree]) -> Rows:
        """Every stage's rows stacked: ``{dtype name: [P, width]}``."""
        rows = [self.pack(s, tree) for s, tree in enumerate(trees)]
        return {name: jnp.stack([r[name] for r in rows]) for name in self.widths}


def packing(trees: Sequence[PyTree]) -> Packing:
    """The packing of ``trees`` (one per stage; arrays or ``jax.ShapeDtypeStruct`` leaves)."""
    treedefs, layouts, widths = [], [], {}
    for tree in trees:
        leaves, treedef = jax.tree.flatten(tree)
        offsets: dict[str, int] = {}
        layout = []
        for leaf in leaves:
            name, shape = np.dtype(leaf.dtype).name, tuple(int(d) for d in leaf.shape)
            layout.append((name, shape, offsets.get(name, 0)))
            offsets[name] = offsets.get(name, 0) + int(np.prod(shape))
        for name, size in offsets.items():
            widths[name] = max(widths.get(name, 0), size)
        treedefs.append(treedef)
        layouts.append(tuple(layout))
    # a zero-width row would not shard: keep at least one padding element
    return Packing(tuple(treedefs), tuple(layouts),
                   {name: max(width, 1) for name, width in sorted(widths.items())})
