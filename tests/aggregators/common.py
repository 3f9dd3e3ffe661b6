"""Cohorts, pytree <-> model-list conversion and jitted rules shared by the tests."""

from __future__ import annotations

import chex
import jax
import numpy as np

import bbjax.aggregators as agg

from . import reference as ref

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


def make_rules(max_weight=None):
    """Every server rule, by test name, with the hyperparameters ``expected`` assumes."""
    cap = dict(max_weight=max_weight)
    return {
        "fedavg": agg.fedavg(**cap),
        "fedavgm": agg.fedavgm(server_learning_rate=0.7, server_momentum=0.9, **cap),
        "fedadagrad": agg.fedadagrad(**cap),
        "fedadam": agg.fedadam(**cap),
        "fedyogi": agg.fedyogi(**cap),
        "median": agg.median(**cap),
        "trimmed_mean": agg.trimmed_mean(0.2, **cap),
        "krum": agg.krum(num_malicious=2, **cap),
        "multikrum": agg.krum(num_malicious=2, num_to_keep=4, **cap),
        "bulyan": agg.bulyan(num_malicious=1, **cap),
        "qfedavg": agg.qfedavg(q=0.5, learning_rate=0.1, **cap),
        "scaffold": agg.scaffold(server_learning_rate=0.8, num_clients=20, **cap),
    }


RULES = make_rules()
JITTED = {name: jax.jit(rule.aggregate) for name, rule in RULES.items()}
FEDOPT = {"fedadagrad": dict(eta=1e-1, beta_1=0.0, beta_2=0.0, tau=1e-9),
          "fedadam": dict(eta=1e-1, beta_1=0.9, beta_2=0.99, tau=1e-9),
          "fedyogi": dict(eta=1e-2, beta_1=0.9, beta_2=0.99, tau=1e-3)}


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


def expected(name, g, clients, w, kw, keep):
    """The float64 reference of one round from a fresh state, on the clients in ``keep``."""
    sub, ws = models(clients, keep), w[keep]
    g_list = jax.tree.leaves(g)
    if name == "fedavg":
        return ref.fedavg(sub, ws)
    if name == "fedavgm":
        return ref.fedavgm_round(g_list, sub, ws, 0.7, 0.9, None)[0]
    if name in FEDOPT:
        return ref.fedopt_round(name[3:], g_list, sub, ws, 1, None, None, **FEDOPT[name])[0]
    if name == "median":
        return ref.median(sub)
    if name == "trimmed_mean":
        return ref.trimmed_mean(sub, 0.2)
    if name == "krum":
        return ref.krum(sub, ws, 2, 0)
    if name == "multikrum":
        return ref.krum(sub, ws, 2, 4)
    if name == "bulyan":
        return ref.bulyan(sub, 1)
    if name == "qfedavg":
        return ref.qfedavg(g_list, sub, kw["losses"][keep], 0.5, 0.1)
    if name == "scaffold":
        zeros = [np.zeros_like(x) for x in g_list]
        return ref.scaffold_round(g_list, zeros, sub, models(kw["control_deltas"], keep), ws,
                                  0.8, 20)[0]
    raise AssertionError(name)


def poison(tree, clients, value, coord=0):
    """Set one coordinate of the first leaf of ``clients`` to ``value``."""
    leaves, treedef = jax.tree.flatten(tree)
    first = np.array(leaves[0])
    for i, v in zip(clients, value):
        first[i].flat[coord] = v
    return treedef.unflatten([first, *leaves[1:]])
