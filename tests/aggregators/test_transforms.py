"""jit / vmap, the blocked kernels (small blocks, the accelerator branch), the sorting
network, and the memory bound of the streaming rules."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bbjax.aggregators as agg
from bbjax.aggregators import columns
from .common import RULES, TOL, cohort, extras, run

N = 11


@pytest.mark.parametrize("name", list(RULES))
def test_vmap_over_servers(name):
    """Two independent servers in one vmapped call equal two separate calls."""
    rule = RULES[name]
    cohorts = [cohort(30 + s, "dense", N) for s in range(2)]
    masks = [np.ones(N, bool), np.arange(N) % 4 != 1]
    kws = [extras(name, c, N, s) for s, (_, c, _) in enumerate(cohorts)]
    single = [run(name, g, c, w, m, **kw) for (g, c, w), m, kw in zip(cohorts, masks, kws)]
    stack = lambda *xs: jax.tree.map(lambda *a: np.stack(a), *xs)
    g, c, w = (stack(*parts) for parts in zip(*cohorts))
    states = stack(*[rule.init(gi) for gi, _, _ in cohorts])
    batched = jax.jit(jax.vmap(rule.aggregate))(states, g, c, w, np.stack(masks), **stack(*kws))
    chex.assert_trees_all_close(batched, stack(*single), **TOL)


def _fresh(name):
    return {"fedavg": agg.fedavg(), "qfedavg": agg.qfedavg(q=0.5, learning_rate=0.1),
            "median": agg.median(), "krum": agg.krum(num_malicious=2)}[name]


@pytest.mark.parametrize("name", ["fedavg", "qfedavg", "median", "krum"])
def test_many_small_blocks(name, monkeypatch):
    """Blocks of 5 columns (a loop, then a remainder) give the one-block result; these four
    rules cover every blocked kernel."""
    g, c, w = cohort(40, "dense", N)
    kw = extras(name, c, N)
    expected = run(name, g, c, w, **kw)[0]
    monkeypatch.setattr(columns, "CPU_BLOCK_ELEMENTS", 5 * N)
    rule = _fresh(name)
    out = jax.jit(rule.aggregate)(rule.init(g), g, c, w, **kw)[0]
    chex.assert_trees_all_close(out, expected, **TOL)


@pytest.mark.parametrize("name", ["fedavg", "median", "krum"])
def test_accelerator_branch(name, monkeypatch):
    """The non-CPU branch (large blocks, ``jnp.sort``), run on CPU, gives the same result."""
    g, c, w = cohort(41, "dense", N)
    expected = run(name, g, c, w)[0]
    monkeypatch.setattr(jax.lax, "platform_dependent",
                        lambda *args, cpu, default: default(*args))
    rule = _fresh(name)
    out = jax.jit(rule.aggregate)(rule.init(g), g, c, w)[0]
    chex.assert_trees_all_close(out, expected, **TOL)


@pytest.mark.parametrize("n", [1, 2, 5, 13])
def test_sorting_network(n):
    x = np.random.default_rng(n).normal(size=(n, 6)).astype(np.float32)
    x[x > 1.2] = np.inf
    x[x < -1.2] = -np.inf
    np.testing.assert_array_equal(np.asarray(jax.jit(columns._sorting_network)(x)),
                                  np.sort(x, axis=0))


@pytest.mark.parametrize("name, rule", [
    ("fedavg", agg.fedavg()),
    ("fedadam", agg.fedadam()),
    ("multikrum", agg.krum(num_malicious=2, num_to_keep=30)),
    ("scaffold", agg.scaffold()),
    ("median", agg.median()),
])
def test_rules_need_no_copy_of_the_stack(name, rule):
    """XLA's buffer assignment: temporaries are O(model + n * block), far below the
    stacked input (the streaming rules, and a blocked order statistic)."""
    n, d = 64, 1 << 19
    g = {"w": jax.ShapeDtypeStruct((d,), jnp.float32)}
    c = {"w": jax.ShapeDtypeStruct((n, d), jnp.float32)}
    w = jax.ShapeDtypeStruct((n,), jnp.float32)
    kw = {"control_deltas": c} if name == "scaffold" else {}
    state = jax.eval_shape(rule.init, g)
    compiled = jax.jit(rule.aggregate).lower(state, g, c, w, **kw).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    model, stack = 4 * d, 4 * n * d
    block = 4 * columns.CPU_BLOCK_ELEMENTS
    assert temp <= 4 * model + 3 * block, (temp, model, block)
    assert temp < stack / 8
