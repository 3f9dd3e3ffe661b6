"""Every rule against its float64 numpy reference, on fresh random cohorts of several
shapes; stateful rules over several rounds."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import bbjax.aggregators as agg
from . import reference as ref
from .common import TREES, close, cohort, extras, models, run

N = 11


@pytest.mark.parametrize("tree", list(TREES))
def test_fedavg(tree):
    g, c, w = cohort(0, tree, N)
    out, _ = run("fedavg", g, c, w)
    close(out, ref.fedavg(models(c), w))


@pytest.mark.parametrize("tree", list(TREES))
def test_median(tree):
    g, c, w = cohort(1, tree, N)
    close(run("median", g, c, w)[0], ref.median(models(c)))


@pytest.mark.parametrize("tree", ["dense", "mixed"])
def test_trimmed_mean(tree):
    g, c, w = cohort(2, tree, N)
    close(run("trimmed_mean", g, c, w)[0], ref.trimmed_mean(models(c), 0.2))


@pytest.mark.parametrize("tree", list(TREES))
def test_krum(tree):
    g, c, w = cohort(3, tree, N)
    close(run("krum", g, c, w)[0], ref.krum(models(c), w, f=2, to_keep=0))


@pytest.mark.parametrize("tree", ["dense", "mixed"])
def test_multikrum(tree):
    g, c, w = cohort(4, tree, N)
    close(run("multikrum", g, c, w)[0], ref.krum(models(c), w, f=2, to_keep=4))


@pytest.mark.parametrize("tree", ["dense", "mixed"])
def test_bulyan(tree):
    g, c, w = cohort(5, tree, N)
    close(run("bulyan", g, c, w)[0], ref.bulyan(models(c), f=1))


@pytest.mark.parametrize("tree", ["dense", "mixed"])
def test_qfedavg(tree):
    g, c, w = cohort(6, tree, N)
    kw = extras("qfedavg", c, N)
    out, _ = run("qfedavg", g, c, w, **kw)
    close(out, ref.qfedavg(jax.tree.leaves(g), models(c), kw["losses"], q=0.5, lr=0.1))


def _rounds(name, tree, seed, rounds=3):
    """Run ``rounds`` rounds, each on a fresh cohort around the current global model."""
    g, _, _ = cohort(seed, tree, N)
    state = None
    for t in range(rounds):
        _, c, w = cohort(seed + 100 + t, tree, N)
        c = jax.tree.map(lambda x, y: x + (y - y.mean(0)), g, c)  # centre on current global
        new, state = run(name, g, c, w, state=state)
        yield t + 1, g, c, w, new
        g = new


@pytest.mark.parametrize("tree", ["dense", "mixed"])
def test_fedavgm_rounds(tree):
    buffer = None
    for _, g, c, w, new in _rounds("fedavgm", tree, 7):
        expected, buffer = ref.fedavgm_round(jax.tree.leaves(g), models(c), w, 0.7, 0.9, buffer)
        close(new, expected)


def test_fedavgm_defaults_are_fedavg():
    g, c, w = cohort(8, "dense", N)
    a = agg.fedavgm()
    out, _ = jax.jit(a.aggregate)(a.init(g), g, c, w)
    close(out, ref.fedavg(models(c), w))


@pytest.mark.parametrize("kind, name, hyper, tree", [
    ("adagrad", "fedadagrad", dict(eta=1e-1, beta_1=0.0, beta_2=0.0, tau=1e-9), "dense"),
    ("adam", "fedadam", dict(eta=1e-1, beta_1=0.9, beta_2=0.99, tau=1e-9), "dense"),
    ("adam", "fedadam", dict(eta=1e-1, beta_1=0.9, beta_2=0.99, tau=1e-9), "mixed"),
    ("yogi", "fedyogi", dict(eta=1e-2, beta_1=0.9, beta_2=0.99, tau=1e-3), "dense"),
])
def test_fedopt_rounds(kind, name, hyper, tree):
    m = v = None
    for server_round, g, c, w, new in _rounds(name, tree, 9):
        expected, m, v = ref.fedopt_round(kind, jax.tree.leaves(g), models(c), w, server_round,
                                          m, v, **hyper)
        close(new, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tree", ["dense", "mixed"])
def test_scaffold_rounds(tree):
    control = None
    state = None
    g, _, _ = cohort(10, tree, N)
    for t in range(3):
        _, c, w = cohort(110 + t, tree, N)
        kw = extras("scaffold", c, N, seed=t)
        new, state = run("scaffold", g, c, w, state=state, **kw)
        control = control or [np.zeros_like(x) for x in jax.tree.leaves(g)]
        expected, control = ref.scaffold_round(jax.tree.leaves(g), control, models(c),
                                               models(kw["control_deltas"]), w, 0.8, 20)
        close(new, expected)
        close(state.control, control)
        g = new
