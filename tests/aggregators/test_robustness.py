"""Absent and non-finite clients, empty rounds and Byzantine outliers."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

from .common import RULES, close, cohort, expected, extras, poison, run

N = 11
ROBUST = ["median", "trimmed_mean", "krum", "multikrum", "bulyan"]


@pytest.mark.parametrize("name", list(RULES))
def test_absent_clients_contribute_nothing(name):
    g, c, w = cohort(20, "dense", N)
    kw = extras(name, c, N)
    absent = [1, 4, 9]
    c = jax.tree.map(lambda x: x.copy(), c)
    for leaf, fill in zip(jax.tree.leaves(c), [np.nan, 1e30]):
        leaf[absent] = fill
    mask = np.ones(N, bool)
    mask[absent] = False
    out, _ = run(name, g, c, w, mask, **kw)
    close(out, expected(name, g, c, w, kw, mask))


@pytest.mark.parametrize("name", list(RULES))
def test_nonfinite_clients_count_as_absent(name):
    g, c, w = cohort(21, "dense", N)
    kw = extras(name, c, N)
    bad = [0, 5, 7]
    c = poison(c, bad, [np.nan, np.inf, -np.inf], coord=3)
    out, _ = run(name, g, c, w, **kw)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(out))
    keep = np.ones(N, bool)
    keep[bad] = False
    close(out, expected(name, g, c, w, kw, keep))


def test_nonfinite_loss_or_control_delta_counts_as_absent():
    g, c, w = cohort(22, "dense", N)
    keep = np.ones(N, bool)
    keep[[2, 6]] = False
    kw = extras("qfedavg", c, N)
    kw["losses"][[2, 6]] = [np.nan, np.inf]
    close(run("qfedavg", g, c, w, **kw)[0], expected("qfedavg", g, c, w, kw, keep))
    kw = extras("scaffold", c, N)
    kw["control_deltas"] = poison(kw["control_deltas"], [2, 6], [np.nan, -np.inf])
    close(run("scaffold", g, c, w, **kw)[0], expected("scaffold", g, c, w, kw, keep))


@pytest.mark.parametrize("name", list(RULES))
def test_empty_round_keeps_global_and_state(name):
    g, c, w = cohort(23, "dense", N)
    state0 = RULES[name].init(g)
    out, state = run(name, g, c, w, np.zeros(N, bool))
    chex.assert_trees_all_equal(out, g)
    if name in ("fedadagrad", "fedadam", "fedyogi"):  # rounds are counted like Flower's
        assert int(state.count) == 1
        state = state._replace(count=state0.count)
    chex.assert_trees_all_equal(state, state0)


@pytest.mark.parametrize("name", ["krum", "multikrum", "bulyan"])
def test_too_few_present_clients_skip_the_round(name):
    g, c, w = cohort(24, "dense", N)
    mask = np.zeros(N, bool)
    mask[:6] = True  # krum(f=2) needs 7, bulyan(f=1) needs 7
    chex.assert_trees_all_equal(run(name, g, c, w, mask)[0], g)


def test_zero_total_weight_skips_weighted_rules():
    g, c, w = cohort(25, "dense", N)
    for name in ["fedavg", "fedavgm", "fedadam", "multikrum", "scaffold"]:
        chex.assert_trees_all_equal(run(name, g, c, np.zeros(N, np.float32))[0], g)


@pytest.mark.parametrize("name, num_bad", [("median", 5), ("trimmed_mean", 2), ("krum", 2),
                                           ("multikrum", 2), ("bulyan", 1)])
@pytest.mark.parametrize("attack", [1e6, -1e6, 3e38])
def test_byzantine_outliers_stay_out(name, num_bad, attack):
    """Up to the tolerated number of finite outliers leaves the result inside the honest
    clients' coordinate-wise range (for Krum: exactly an honest client)."""
    g, c, w = cohort(26, "dense", N)
    bad = np.arange(num_bad) * 2
    c = jax.tree.map(lambda x: x.copy(), c)
    for leaf in jax.tree.leaves(c):
        leaf[bad] = attack
    honest = np.setdiff1d(np.arange(N), bad)
    out, _ = run(name, g, c, w)
    for o, x in zip(jax.tree.leaves(out), jax.tree.leaves(c)):
        o, h = np.asarray(o), x[honest]
        assert (o >= h.min(0) - 1e-6).all() and (o <= h.max(0) + 1e-6).all()
        if name == "krum":
            assert any(np.array_equal(o, hi) for hi in h)


def test_krum_picks_a_present_client_when_every_score_overflows():
    g, c, w = cohort(27, "dense", N)
    c = jax.tree.map(lambda x: np.full_like(x, 3e38), c)
    c["b"][:, 0] = np.linspace(-3e38, 3e38, N)
    c["w"][0, 0, 0] = np.nan
    c["b"][1] = np.inf
    mask = np.ones(N, bool)
    mask[1] = False
    out, _ = run("krum", g, c, w, mask)
    assert any(np.array_equal(out["b"], c["b"][i]) for i in range(2, N))
