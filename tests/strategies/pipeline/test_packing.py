"""Packing per-stage trees of different structures and dtypes into rows is exact."""

from __future__ import annotations

import jax
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.strategies.pipeline.packing import packing

DTYPES = ["float32", "int32", "bfloat16", "uint8"]

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
leaf = st.tuples(st.sampled_from(DTYPES), shapes)
tree = st.dictionaries(st.sampled_from("abcdef"), st.lists(leaf, max_size=2), max_size=3)


@settings(max_examples=12, deadline=None)
@given(specs=st.lists(tree, min_size=1, max_size=3), seed=st.integers(0, 2**31 - 1))
def test_pack_unpack_round_trip(specs, seed):
    rng = np.random.default_rng(seed)
    trees = [{k: [(rng.normal(size=shape) * 100).astype(jax.numpy.dtype(d)) for d, shape in v]
              for k, v in spec.items()} for spec in specs]
    layout = packing(trees)
    stacked = layout.stack(trees)
    for name, rows in stacked.items():
        assert rows.shape == (len(trees), layout.widths[name]) and rows.dtype.name == name
        sizes = [sum(x.size for x in jax.tree.leaves(t) if x.dtype.name == name) for t in trees]
        assert layout.widths[name] == max(1, *sizes)
    for s, original in enumerate(trees):
        back = layout.unpack(s, {name: rows[s] for name, rows in stacked.items()})
        assert jax.tree.structure(back) == jax.tree.structure(original)
        for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(original)):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(np.asarray(a), b)
