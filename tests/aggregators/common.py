"""Cohorts, pytree <-> model-list conversion and jitted rules shared by the tests."""

from __future__ import annotations

import chex
import jax
import numpy as np

import bbjax.aggregators as agg

TREES = {
    "dense": {"w": (3, 4), "b": (4,)},
    "mixed": {"conv": {"kernel": (2, 3, 2)}, "scale": (), "bias": (5,)},
    "tuple": ((7,), (2, 2, 2)),
}
TOL = dict(rtol=1e-5, atol=1e-6)


def _leaves(shapes):
    return jax.tree.leaves(shapes, is_leaf=lambda s: isinstance(s, tuple) and all(
        isinstance(d, int) for d in s))


def cohort(seed: int, tree: str, n: int, spread: float = 0.3):
    """(global, stacked clients, weights): float32 pytrees, clients around the global model
    with client-specific scales, integer example counts as float32."""
    r = np.random.default_rng(seed)
    shapes = TREES[tree]
    treedef = jax.tree.structure(shapes, is_leaf=lambda s: isinstance(s, tuple) and all(
        isinstance(d, int) for d in s))
    leaves = _leaves(shapes)
    scales = spread * r.uniform(0.5, 2.0, size=n)
    g = [r.normal(size=s).astype(np.float32) for s in leaves]
    c = [(x + scales.reshape((n,) + (1,) * x.ndim) * r.normal(size=(n,) + x.shape))
         .astype(np.float32) for x in g]
    w = r.integers(1, 100, size=n).astype(np.float32)
    return treedef.unflatten(g), treedef.unflatten(c), w


def models(stacked, keep=None):
    """Stacked pytree -> list of per-client leaf lists (Flower's NDArrays), optionally only
    the clients where ``keep`` is True."""
    leaves = [np.asarray(x) for x in jax.tree.leaves(stacked)]
    n = leaves[0].shape[0]
    idx = range(n) if keep is None else np.flatnonzero(keep)
    return [[x[i] for x in leaves] for i in idx]


def as_tree(like, model_list):
    return jax.tree.structure(like).unflatten([np.asarray(a) for a in model_list])


def close(actual, expected_list, **tol):
    chex.assert_trees_all_close(actual, as_tree(actual, expected_list), **(tol or TOL))


RULES = {
    "fedavg": agg.fedavg(),
    "fedavgm": agg.fedavgm(server_learning_rate=0.7, server_momentum=0.9),
    "fedadagrad": agg.fedadagrad(),
    "fedadam": agg.fedadam(),
    "fedyogi": agg.fedyogi(),
    "median": agg.median(),
    "trimmed_mean": agg.trimmed_mean(0.2),
    "krum": agg.krum(num_malicious=2),
    "multikrum": agg.krum(num_malicious=2, num_to_keep=4),
    "bulyan": agg.bulyan(num_malicious=1),
    "qfedavg": agg.qfedavg(q=0.5, learning_rate=0.1),
    "scaffold": agg.scaffold(server_learning_rate=0.8, num_clients=20),
}
JITTED = {name: jax.jit(rule.aggregate) for name, rule in RULES.items()}


def extras(name, clients, n, seed=0):
    """The rule-specific keyword inputs."""
    r = np.random.default_rng(seed + 1)
    if name == "qfedavg":
        return {"losses": r.uniform(0.5, 2.0, size=n).astype(np.float32)}
    if name == "scaffold":
        return {"control_deltas": jax.tree.map(
            lambda x: (0.1 * r.normal(size=x.shape)).astype(np.float32), clients)}
    return {}


def run(name, global_params, clients, weights, mask=None, state=None, **kw):
    """One jitted round of rule ``name`` from a fresh state (or ``state``)."""
    n = weights.shape[0]
    if mask is None:
        mask = np.ones(n, bool)
    if state is None:
        state = RULES[name].init(global_params)
    kw = kw or extras(name, clients, n)
    return JITTED[name](state, global_params, clients, weights, mask, **kw)
