"""Hypothesis properties: permutation invariance, the role of weights, and masked rows."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bbjax.aggregators as agg
from bbjax.aggregators import EmptyState
from . import reference as ref
from .common import RULES, TOL, close, cohort, extras, models, run

N = 11
WEIGHTED = ["fedavg", "fedavgm", "fedadagrad", "fedadam", "fedyogi", "multikrum", "scaffold"]
UNWEIGHTED = ["median", "trimmed_mean", "krum", "bulyan", "qfedavg"]
PROPERTY = settings(max_examples=6, deadline=None)
seeds = st.integers(0, 2**31 - 1)


def _take(tree, idx):
    return jax.tree.map(lambda x: np.asarray(x)[idx], tree)


@pytest.mark.parametrize("name", [r for r in RULES if r != "bulyan"])
@PROPERTY
@given(seed=seeds, perm=st.permutations(range(N)), absent=st.sets(st.integers(0, N - 1),
                                                                   max_size=3))
def test_permutation_invariance(name, seed, perm, absent):
    g, c, w = cohort(seed, "dense", N)
    kw = extras(name, c, N, seed)
    mask = np.ones(N, bool)
    mask[list(absent)] = False
    perm = np.asarray(perm)
    out, _ = run(name, g, c, w, mask, **kw)
    out_p, _ = run(name, g, _take(c, perm), w[perm], mask[perm], **_take(kw, perm))
    chex.assert_trees_all_close(out, out_p, **TOL)


BULYAN3 = jax.jit(agg.bulyan(num_malicious=3).aggregate)


@PROPERTY
@given(seed=seeds, perm=st.permutations(range(15)))
def test_bulyan_permutation_invariance_without_structural_ties(seed, perm):
    """Bulyan(f) is order-dependent for f <= 2 (see its docstring); for f = 3 it matches
    the reference and is invariant."""
    g, c, w = cohort(seed, "dense", 15)
    perm = np.asarray(perm)
    out, _ = BULYAN3(EmptyState(), g, c, w)
    close(out, ref.bulyan(models(c), 3))
    chex.assert_trees_all_close(BULYAN3(EmptyState(), g, _take(c, perm), w[perm])[0], out, **TOL)


@pytest.mark.parametrize("name", WEIGHTED)
@PROPERTY
@given(seed=seeds, scale=st.sampled_from([0.25, 3.0, 1000.0]))
def test_only_relative_weights_matter(name, seed, scale):
    g, c, w = cohort(seed, "dense", N)
    kw = extras(name, c, N, seed)
    chex.assert_trees_all_close(run(name, g, c, w, **kw)[0],
                                run(name, g, c, (w * scale).astype(np.float32), **kw)[0], **TOL)


@pytest.mark.parametrize("name", UNWEIGHTED)
@PROPERTY
@given(seed=seeds)
def test_weights_are_ignored(name, seed):
    g, c, w = cohort(seed, "dense", N)
    kw = extras(name, c, N, seed)
    other = np.random.default_rng(seed).integers(1, 1000, N).astype(np.float32)
    chex.assert_trees_all_equal(run(name, g, c, w, **kw)[0], run(name, g, c, other, **kw)[0])


@PROPERTY
@given(seed=seeds, i=st.integers(0, N - 2))
def test_fedavg_weight_equals_duplication(seed, i):
    """Client i with weight 2w equals two copies of client i with weight w each."""
    g, c, w = cohort(seed, "dense", N)
    dup = jax.tree.map(lambda x: np.concatenate([x[:i + 1], x[i:i + 1], x[i + 2:]]), c)
    w_dup = np.concatenate([w[:i + 1], w[i:i + 1], w[i + 2:]])
    w_two = w_dup.copy()
    w_two[i] *= 2
    mask = np.ones(N, bool)
    mask[i + 1] = False
    chex.assert_trees_all_close(run("fedavg", g, dup, w_dup)[0],
                                run("fedavg", g, dup, w_two, mask)[0], **TOL)


@pytest.mark.parametrize("name", list(RULES))
@PROPERTY
@given(seed=seeds, absent=st.sets(st.integers(0, N - 1), min_size=1, max_size=3),
       garbage=st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -3e38, 0.5]))
def test_masked_rows_are_never_read(name, seed, absent, garbage):
    g, c, w = cohort(seed, "dense", N)
    kw = extras(name, c, N, seed)
    mask = np.ones(N, bool)
    mask[list(absent)] = False

    def fill(value):
        def f(x):
            x = np.array(x)
            x[~mask] = value
            return x
        return f

    kw_a = {k: jax.tree.map(fill(0.0), v) for k, v in kw.items()}
    kw_b = {k: jax.tree.map(fill(garbage), v) for k, v in kw.items()}
    w_b = fill(garbage)(w)
    chex.assert_trees_all_equal(run(name, g, jax.tree.map(fill(0.0), c), w, mask, **kw_a)[0],
                                run(name, g, jax.tree.map(fill(garbage), c), w_b, mask, **kw_b)[0])
