"""PBT's exploit and explore against the plain-Python reference of somatize's rules, on
fixed and on random fitness values, jitted."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbjax.errors import InvalidArgument
from bbjax.strategies import pbt
from tests.strategies.pbt import somatize_reference as ref

SPACE = pbt.SearchSpace({"lr": pbt.Float(0.01, 0.5), "steps": pbt.Int(1, 9),
                         "act": pbt.Categorical(("relu", "tanh", "gelu", "silu"))})


def _members(n: int, finite: list[bool] | None = None) -> dict:
    w = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    if finite is not None:
        w[~np.asarray(finite), 1] = np.nan
    return {"w": jnp.asarray(w), "count": jnp.arange(n, dtype=jnp.int32) * 10}


@functools.cache
def _jitted(method, batched=False):
    step = lambda k, f, m, h: pbt.exploit(k, f, m, h, method)
    return jax.jit(jax.vmap(step) if batched else step)


def _exploit(key, fitness, members, hparams, method):
    return _jitted(method)(key, fitness, members, hparams)


FIXED = [
    ([3.0, 1.0, 2.0, 5.0, 0.0, 4.0], 0.2),
    ([1.0, 1.0, 1.0, 1.0], 0.5),                      # all tied: lower slots rank first
    ([2.0, math.nan, 7.0, -math.inf, 7.0, 1.0, 0.5], 0.25),
    ([0.5, math.inf, 0.1, 0.2, 0.3], 1.0),              # +inf is no fitness: it fails
    ([9.0, 8.0], 0.01),
]


@pytest.mark.parametrize("fitness, fraction", FIXED)
def test_truncation_matches_somatize_on_fixed_values(fitness, fraction):
    n = len(fitness)
    hparams = pbt.sample(jax.random.key(0), SPACE, n)
    members, new_h, lineage = _exploit(jax.random.key(1), jnp.asarray(fitness, jnp.float32),
                                       _members(n), hparams, pbt.Truncation(fraction))
    guarded = ref.guarded(fitness, [True] * n)
    parent, explored = ref.truncation(guarded, fraction)
    assert lineage.order.tolist() == ref.ranking(guarded)
    assert lineage.parent.tolist() == parent
    assert lineage.explored.tolist() == explored
    np.testing.assert_array_equal(members["w"], np.asarray(_members(n)["w"])[parent])
    np.testing.assert_array_equal(members["count"], np.arange(n)[parent] * 10)
    for name in SPACE.names:
        np.testing.assert_array_equal(new_h[name], np.asarray(hparams[name])[parent])


def test_truncation_on_the_documented_pairs():
    # order 3, 5, 0, 2, 1, 4; cutoff ceil(1.2) = 2: slot 4 <- 3, slot 1 <- 5
    _, _, lineage = _exploit(jax.random.key(0), jnp.array([3.0, 1.0, 2.0, 5.0, 0.0, 4.0]),
                             _members(6), pbt.sample(jax.random.key(0), SPACE, 6),
                             pbt.Truncation(0.2))
    assert lineage.parent.tolist() == [0, 5, 2, 3, 3, 5]
    assert lineage.explored.tolist() == [False, True, False, False, True, False]


@pytest.mark.parametrize("n, fraction, cut", [
    (2, 0.01, 1), (2, 1.0, 1), (2, 0.5, 1), (3, 1.0, 1), (10, 1.0, 5), (10, 0.01, 1),
    (10, 0.2, 2), (10, 0.21, 3), (5, 0.5, 2), (20, 0.25, 5), (7, 0.3, 3)])
def test_truncation_cutoff_edges(n, fraction, cut):
    assert pbt.cutoff(pbt.Truncation(fraction), n) == cut == ref.truncation_cutoff(n, fraction)


def test_binary_cutoff_and_bad_sizes():
    assert [pbt.cutoff(pbt.Binary(), n) for n in (2, 3, 4, 5, 9)] == [1, 1, 2, 2, 4]
    with pytest.raises(InvalidArgument, match="at least 2"):
        pbt.cutoff(pbt.Binary(), 1)
    with pytest.raises(InvalidArgument, match="Truncation or Binary"):
        pbt.cutoff(pbt.Resample(), 4)


@pytest.mark.parametrize("n, fraction", [(2, 0.7), (5, 0.3), (8, 0.45), (13, 0.2)])
def test_rules_match_the_reference_on_random_fitness(n, fraction):
    rng = np.random.default_rng(n * 100 + int(fraction * 100))
    trials = 12
    fitness = rng.normal(size=(trials, n)).round(1)  # rounding makes ties
    fitness[rng.random((trials, n)) < 0.15] = np.nan
    finite = rng.random((trials, n)) > 0.15
    keys = jax.random.split(jax.random.key(n), trials)
    members = jax.tree.map(lambda *x: jnp.stack(x),
                           *[_members(n, row.tolist()) for row in finite])
    hparams = jax.vmap(lambda k: pbt.sample(k, SPACE, n))(keys)
    opponents = np.asarray(jax.vmap(lambda k: jax.random.randint(k, (n // 2,), 0, n // 2))(
        keys))
    for method in (pbt.Truncation(fraction), pbt.Binary()):
        _, _, lineage = _jitted(method, batched=True)(
            keys, jnp.asarray(fitness, jnp.float32), members, hparams)
        lineage = jax.device_get(lineage)
        for t in range(trials):
            guarded = ref.guarded(fitness[t].tolist(), finite[t].tolist())
            np.testing.assert_array_equal(lineage.fitness[t], np.float32(guarded))
            if isinstance(method, pbt.Binary):
                parent, explored = ref.binary(guarded, opponents[t].tolist())
            else:
                parent, explored = ref.truncation(guarded, fraction)
            assert lineage.parent[t].tolist() == parent
            assert lineage.explored[t].tolist() == explored


def test_binary_copies_only_when_strictly_worse():
    n = 8
    hparams = pbt.sample(jax.random.key(0), SPACE, n)
    tied = jnp.full((n,), 0.5)
    for seed in range(5):
        _, _, lineage = _exploit(jax.random.key(seed), tied, _members(n), hparams,
                                 pbt.Binary())
        assert lineage.parent.tolist() == list(range(n))
        assert lineage.explored.tolist() == [False] * 4 + [True] * 4
    fitness = jnp.arange(n, 0, -1.0)  # slot 0 best
    copied = np.zeros(n, int)
    for seed in range(60):
        _, _, lineage = _exploit(jax.random.key(seed), fitness, _members(n), hparams,
                                 pbt.Binary())
        parent = np.asarray(lineage.parent)
        assert (parent[:4] == np.arange(4)).all() and (parent[4:] < 4).all()
        copied += np.bincount(parent[4:], minlength=n)
    assert (copied[:4] > 30).all()  # every top member gets picked (60 × 4 / 4 = 60 each)


def test_failing_members_get_minus_infinity():
    fitness = jnp.array([1.0, jnp.nan, 3.0, jnp.inf, 2.0, -jnp.inf])
    members = _members(6, [True, True, False, True, True, True])
    guarded = pbt.guard(fitness, members)
    np.testing.assert_array_equal(guarded, [1.0, -np.inf, -np.inf, -np.inf, 2.0, -np.inf])
    assert pbt.rank(guarded).tolist() == [4, 0, 1, 2, 3, 5]
    ints_only = {"count": jnp.arange(3)}
    assert pbt.finite_members(ints_only).tolist() == [True] * 3


def test_explore_perturbation_range_and_what_it_leaves():
    n = 400
    hparams = pbt.sample(jax.random.key(3), SPACE, n)
    explored = jnp.arange(n) % 2 == 0
    new = jax.jit(lambda k, h, e: pbt.explore(k, h, e, SPACE, pbt.Perturbation(0.3)))(
        jax.random.key(4), hparams, explored)
    e = np.asarray(explored)
    for name in ("lr", "steps"):
        ratio = np.asarray(new[name]) / np.asarray(hparams[name])
        assert (ratio[e] >= 0.7 - 1e-6).all() and (ratio[e] <= 1.3 + 1e-6).all()
        assert ratio[e].min() < 0.72 and ratio[e].max() > 1.28      # the whole range
        assert abs(ratio[e].mean() - 1.0) < 0.03                  # u uniform on [-1, 1]
        np.testing.assert_array_equal(ratio[~e], 1.0)
    assert not np.all(np.asarray(new["steps"])[e] == np.round(np.asarray(new["steps"])[e]))
    np.testing.assert_array_equal(new["act"], hparams["act"])
    assert new["act"].dtype == jnp.int32 and new["lr"].dtype == jnp.float32


def test_explore_resample_stays_in_the_space():
    n = 300
    hparams = {"lr": jnp.full((n,), 7.0), "steps": jnp.full((n,), 70.0),
               "act": jnp.zeros((n,), jnp.int32)}
    explored = jnp.arange(n) < 200
    new = pbt.explore(jax.random.key(0), hparams, explored, SPACE, pbt.Resample())
    lr, steps, act = (np.asarray(new[k]) for k in ("lr", "steps", "act"))
    assert ((lr[:200] >= 0.01) & (lr[:200] <= 0.5)).all() and (lr[200:] == 7.0).all()
    assert set(steps[:200]) == set(range(1, 10)) and (steps[200:] == 70.0).all()
    assert set(act[:200]) == {0, 1, 2, 3}
    values = pbt.decode(SPACE, new)
    assert values["steps"].dtype == jnp.int32 and values["lr"].dtype == jnp.float32


def test_ray_tune_preset_explores_as_ray_tune():
    exploit, explore = pbt.ray_tune_preset()
    assert exploit == pbt.Truncation(0.25)
    assert explore == pbt.RayTune(0.25, (0.8, 1.2))
    n = 2000
    hparams = {"lr": jnp.full((n,), 0.2), "steps": jnp.full((n,), 5.0),
               "act": jnp.full((n,), 3, jnp.int32).at[: n // 2].set(0)}
    new = pbt.explore(jax.random.key(5), hparams, jnp.ones((n,), bool), SPACE, explore)
    lr = np.asarray(new["lr"])
    times = np.isclose(lr, 0.16) | np.isclose(lr, 0.24)
    assert abs((~times).mean() - 0.25) < 0.04                     # resampled
    assert ((lr[~times] >= 0.01) & (lr[~times] <= 0.5)).all()
    assert abs(np.isclose(lr, 0.16).mean() - 0.375) < 0.04
    steps = np.asarray(new["steps"])
    assert set(steps) <= set(range(1, 10)) and (steps == 4.0).any() and (steps == 6.0).any()
    act = np.asarray(new["act"])
    assert set(act[: n // 2]) <= {0, 1, 2, 3} and (act[: n // 2] == 1).mean() > 0.3
    assert (act[n // 2:] == 2).mean() > 0.3


def test_evolve_is_exploit_then_explore():
    n = 6
    fitness = jnp.array([3.0, 1.0, 2.0, 5.0, 0.0, 4.0])
    hparams = pbt.sample(jax.random.key(0), SPACE, n)
    key = jax.random.key(9)
    members, new, lineage = pbt.evolve(key, fitness, _members(n), hparams, SPACE,
                                       exploit=pbt.Truncation(0.2),
                                       explore=pbt.Perturbation(0.2))
    k1, k2 = jax.random.split(key)
    m2, h2, l2 = pbt.exploit(k1, fitness, _members(n), hparams, pbt.Truncation(0.2))
    h2 = pbt.explore(k2, h2, l2.explored, SPACE, pbt.Perturbation(0.2))
    assert lineage.parent.tolist() == l2.parent.tolist()
    for name in SPACE.names:
        np.testing.assert_array_equal(new[name], h2[name])
    np.testing.assert_array_equal(members["w"], m2["w"])


def test_bad_hyperparameters_are_named():
    hparams = pbt.sample(jax.random.key(0), SPACE, 4)
    with pytest.raises(InvalidArgument, match="must name"):
        pbt.explore(jax.random.key(0), {"lr": hparams["lr"]}, jnp.ones(4, bool), SPACE,
                    pbt.Resample())
    with pytest.raises(InvalidArgument, match="not all numbers"):
        pbt.choice_values(SPACE["act"], hparams["act"])
    np.testing.assert_allclose(pbt.choice_values(pbt.Categorical((0.5, 2)), jnp.array([1, 0])),
                               [2.0, 0.5])
