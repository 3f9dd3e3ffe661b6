"""One client cannot poison a rule: a NaN or infinite update, or a NaN, negative or over-cap
weight makes that client absent for the round, ``rejected`` counts it, and stateful rules'
moments and control variates only ever see the honest clients."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bbjax.aggregators as agg
from . import reference as ref
from .common import FEDOPT, close, cohort, expected, extras, make_rules, models, poison

N = 11
MAX = 100.0  # the cohort's weights are integer counts in [1, 100)
RULES = make_rules(max_weight=MAX)
APPLY = {name: jax.jit(rule.apply) for name, rule in RULES.items()}
STATEFUL = ["fedavgm", "fedadagrad", "fedadam", "fedyogi", "scaffold"]


def _nan_update(c, w, i):
    return poison(c, [i], [np.nan], coord=2), w


def _inf_update(c, w, i):  # in the other leaf than _nan_update's
    c = dict(c, w=np.array(c["w"]))
    c["w"][i, 1, 2] = np.inf
    return c, w


def _weight(value):
    def set_weight(c, w, i):
        w = w.copy()
        w[i] = value
        return c, w
    return set_weight


POISONS = {"nan_update": _nan_update, "inf_update": _inf_update,
           "negative_weight": _weight(-1.0), "nan_weight": _weight(np.nan),
           "weight_over_cap": _weight(10 * MAX)}


def _poisoned(seed, n, kinds, clients):
    """A cohort of ``n`` with client ``clients[k]`` poisoned by ``kinds[k]``; and the honest
    clients' mask."""
    g, c, w = cohort(seed, "dense", n)
    for kind, i in zip(kinds, clients):
        c, w = POISONS[kind](c, w, i)
    honest = np.ones(n, bool)
    honest[list(clients)] = False
    return g, c, w, honest


def _finite(tree):
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("kind", list(POISONS))
@pytest.mark.parametrize("name", list(RULES))
def test_one_poisoned_client_is_rejected(name, kind):
    i = 1 + list(POISONS).index(kind)
    g, c, w, honest = _poisoned(30 + i, N, [kind], [i])
    kw = extras(name, c, N)
    out = APPLY[name](RULES[name].init(g), g, c, w, np.ones(N, bool), **kw)
    assert out.rejected.dtype == jnp.int32 and int(out.rejected) == 1
    np.testing.assert_array_equal(out.present, honest)
    close(out.params, expected(name, g, c, w, kw, honest))
    assert _finite(out.state)


@pytest.mark.parametrize("name", list(RULES))
def test_without_a_cap_nan_negative_and_infinite_weights_are_still_rejected(name):
    g, c, w, honest = _poisoned(35, N, ["nan_weight", "negative_weight"], [2, 7])
    w[9], honest[9] = np.inf, False
    rule = make_rules()[name]
    kw = extras(name, c, N)
    out = jax.jit(rule.apply)(rule.init(g), g, c, w, None, **kw)
    assert int(out.rejected) == 3
    close(out.params, expected(name, g, c, w, kw, honest))


@pytest.mark.parametrize("name", list(RULES))
def test_every_kind_of_poison_at_once_and_absent_clients_are_not_counted(name):
    n = 14  # 8 honest clients left: enough for krum(f=2) and bulyan(f=1)
    g, c, w, honest = _poisoned(40, n, list(POISONS), [0, 3, 6, 9, 12])
    mask = np.ones(n, bool)
    mask[[1, 4]] = False
    c = poison(c, [4], [np.nan])  # an absent client's garbage is not a rejection
    w[1] = -5.0
    kw = extras(name, c, n)
    out = jax.jit(RULES[name].apply)(RULES[name].init(g), g, c, w, mask, **kw)
    assert int(out.rejected) == len(POISONS)
    np.testing.assert_array_equal(out.present, honest & mask)
    close(out.params, expected(name, g, c, w, kw, honest & mask))


@pytest.mark.parametrize("name", STATEFUL)
def test_stateful_rules_moments_only_see_honest_clients_over_rounds(name):
    """A different client is poisoned each round, a different way; the global model and
    the rule's state follow the float64 reference run on the honest clients only."""
    g, _, _ = cohort(50, "dense", N)
    state = RULES[name].init(g)
    buffer = m = v = None
    control = [np.zeros_like(x, np.float64) for x in jax.tree.leaves(g)]
    for t, kind in enumerate(POISONS):
        _, c, w = cohort(51 + t, "dense", N)
        c = jax.tree.map(lambda x, y: x + (y - y.mean(0)), g, c)  # centre on current global
        c, w = POISONS[kind](c, w, t)
        honest = np.arange(N) != t
        kw = extras(name, c, N, seed=t)
        out = APPLY[name](state, g, c, w, None, **kw)
        assert int(out.rejected) == 1
        sub, ws, current = models(c, honest), w[honest], jax.tree.leaves(g)
        if name == "fedavgm":
            want, buffer = ref.fedavgm_round(current, sub, ws, 0.7, 0.9, buffer)
            close(out.state.momentum, buffer)
        elif name == "scaffold":
            want, control = ref.scaffold_round(current, control, sub,
                                               models(kw["control_deltas"], honest), ws, 0.8, 20)
            close(out.state.control, control)
        else:
            want, m, v = ref.fedopt_round(name[3:], current, sub, ws, t + 1, m, v,
                                          **FEDOPT[name])
            close(out.state.m, m, rtol=1e-5, atol=1e-6)
            close(out.state.v, v, rtol=1e-4, atol=1e-9)
        close(out.params, want, rtol=1e-5, atol=1e-5)
        assert _finite(out.state)
        g, state = out.params, out.state


@pytest.mark.parametrize("name", list(RULES))
def test_a_round_with_every_client_rejected_is_skipped(name):
    kinds = [list(POISONS)[i % len(POISONS)] for i in range(N)]
    g, c, w, _ = _poisoned(60, N, kinds, range(N))
    state0 = RULES[name].init(g)
    kw = extras(name, c, N)
    out = APPLY[name](state0, g, c, w, None, **kw)
    assert int(out.rejected) == N and not np.asarray(out.present).any()
    chex.assert_trees_all_equal(out.params, g)
    state = out.state
    if name in FEDOPT:  # rounds are counted like Flower's server_round
        assert int(state.count) == 1
        state = state._replace(count=state0.count)
    chex.assert_trees_all_equal(state, state0)


@pytest.mark.parametrize("name", ["fedavg", "median", "multikrum", "qfedavg"])
def test_weight_at_the_cap_and_zero_weight_are_accepted(name):
    g, c, w = cohort(70, "dense", N)
    w[0], w[1] = MAX, 0.0
    kw = extras(name, c, N)
    out = APPLY[name](RULES[name].init(g), g, c, w, None, **kw)
    assert int(out.rejected) == 0
    close(out.params, expected(name, g, c, w, kw, np.ones(N, bool)))


def test_without_a_cap_huge_finite_weights_do_not_overflow():
    g, c, w = cohort(71, "dense", N)
    w = np.full(N, 3e38, np.float32)
    w[0] = 1.5e38
    rule = agg.fedavg()
    out = jax.jit(rule.apply)(rule.init(g), g, c, w)
    assert int(out.rejected) == 0
    close(out.params, ref.fedavg(models(c), w.astype(np.float64)))


def test_vmapped_servers_reject_their_own_poisoned_clients():
    kinds = list(POISONS)
    cohorts = [_poisoned(80 + k, N, [kind], [k]) for k, kind in enumerate(kinds)]
    stack = lambda xs: jax.tree.map(lambda *a: np.stack(a), *xs)  # noqa: E731
    g, c, w = (stack([x[j] for x in cohorts]) for j in range(3))
    rule = RULES["fedadam"]
    out = jax.jit(jax.vmap(rule.apply))(jax.vmap(rule.init)(g), g, c, w)
    np.testing.assert_array_equal(out.rejected, np.ones(len(kinds)))
    for k, (gk, ck, wk, honest) in enumerate(cohorts):
        close(jax.tree.map(lambda a, k=k: a[k], out.params),
              expected("fedadam", gk, ck, wk, {}, honest))
