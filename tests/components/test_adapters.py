"""Rules, codecs and selectors from the algorithm library, bound as components."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from bbjax import aggregators, compression, selection
from bbjax.components import codec_component, rule_aggregator, selector_component
from tests.aggregators import reference as ref


def test_rule_aggregator_applies_the_rule_to_buffered_peers():
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(3,)).astype(np.float32)}
    updates = rng.normal(size=(4, 3)).astype(np.float32)
    component = rule_aggregator(aggregators.median(), capacity=6, initial_params=params)
    state = component.init(jax.random.PRNGKey(0))
    for peer, row in zip([5, 1, 3, 1], updates):  # peer 1 contributes twice: replaces
        state, _ = component.call("contribute", state, jnp.int32(peer), {"w": row},
                                  jnp.float32(1.0))
    state, (new_global, total) = jax.jit(lambda s: component.call("aggregate", s))(state)
    want = np.median(np.stack([updates[0], updates[3], updates[2]]), axis=0)
    np.testing.assert_allclose(new_global["w"], want, rtol=1e-6)
    assert float(total) == 3.0
    chex.assert_trees_all_close(state.global_params, new_global)
    assert int(jnp.sum(state.buffer.peers >= 0)) == 0  # cleared for the next round


def test_rule_aggregator_aggregates_a_stacked_cohort_and_passes_losses_to_qfedavg():
    rng = np.random.default_rng(1)
    params = {"w": rng.normal(size=(5,)).astype(np.float32)}
    stacked = {"w": rng.normal(size=(4, 5)).astype(np.float32)}
    weights = np.array([3.0, 1.0, 2.0, 5.0], np.float32)
    mask = np.array([True, True, False, True])
    losses = rng.uniform(0.5, 2.0, 4).astype(np.float32)
    rule = aggregators.qfedavg(q=0.5)
    component = rule_aggregator(rule, capacity=4, initial_params=params)
    state = component.init(jax.random.PRNGKey(0))
    state, (got, total) = jax.jit(lambda s: component.call(
        "aggregate_stacked", s, params, stacked, weights, mask, losses))(state)
    want, _ = rule.aggregate(rule.init(params), params, stacked, weights, mask, losses=losses)
    chex.assert_trees_all_close(got, want, rtol=1e-6)
    assert float(total) == 9.0
    chex.assert_trees_all_close(state.global_params, got)


def test_rule_aggregator_keeps_a_stateful_rules_state_between_stacked_rounds():
    rng = np.random.default_rng(2)
    params = {"w": rng.normal(size=(3,)).astype(np.float32)}
    rule = aggregators.fedadam(eta=0.1)
    component = rule_aggregator(rule, capacity=3, initial_params=params)
    state, rule_state, current = component.init(jax.random.PRNGKey(0)), rule.init(params), params
    for _ in range(3):
        stacked = {"w": rng.normal(size=(3, 3)).astype(np.float32)}
        ones, weights = np.ones(3, bool), np.ones(3, np.float32)
        state, (got, _) = component.call("aggregate_stacked", state, current, stacked, weights,
                                         ones, np.zeros(3, np.float32))
        current, rule_state = rule.aggregate(rule_state, current, stacked, weights, ones)
        chex.assert_trees_all_close(got, current, rtol=1e-6)


def test_rule_aggregator_rejects_a_buffered_non_finite_contribution():
    rng = np.random.default_rng(3)
    params = {"w": rng.normal(size=(3,)).astype(np.float32)}
    updates = rng.normal(size=(3, 3)).astype(np.float32)
    updates[1, 2] = np.nan
    component = rule_aggregator(aggregators.median(), capacity=4, initial_params=params)
    state = component.init(jax.random.PRNGKey(0))
    for peer, (row, weight) in enumerate(zip(updates, [2.0, 3.0, 4.0])):
        state, _ = component.call("contribute", state, jnp.int32(peer), {"w": row},
                                  jnp.float32(weight))
    state, (new_global, total) = jax.jit(lambda s: component.call("aggregate", s))(state)
    np.testing.assert_allclose(new_global["w"], np.median(updates[[0, 2]], axis=0), rtol=1e-6)
    assert float(total) == 6.0
    assert int(state.rejected) == 1 and int(state.buffer.num_rejected) == 1


def test_rule_aggregator_keeps_fedadams_moments_to_the_honest_clients():
    """Each stacked round holds one poisoned client (NaN update, negative count, count over
    max_weight); global model and moments follow the float64 reference without it."""
    rng = np.random.default_rng(4)
    params = {"w": rng.normal(size=(3,)).astype(np.float32)}
    hyper = dict(eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-9)
    rule = aggregators.fedadam(**hyper, max_weight=50.0)
    component = rule_aggregator(rule, capacity=4, initial_params=params)
    step = jax.jit(lambda s, g, x, w: component.call("aggregate_stacked", s, g, x, w,
                                                     np.ones(4, bool), np.zeros(4, np.float32)))
    state, current, m, v = component.init(jax.random.PRNGKey(0)), params, None, None
    for r in range(3):
        stacked = {"w": (current["w"] + rng.normal(size=(4, 3))).astype(np.float32)}
        weights = np.array([3.0, 1.0, 2.0, 5.0], np.float32)
        bad = r + 1
        if r == 0:
            stacked["w"][bad, 0] = np.nan
        else:
            weights[bad] = -1.0 if r == 1 else 60.0
        honest = np.arange(4) != bad
        state, (got, total) = step(state, current, stacked, weights)
        want, m, v = ref.fedopt_round("adam", [current["w"]], [[x] for x in stacked["w"][honest]],
                                      weights[honest], r + 1, m, v, **hyper)
        np.testing.assert_allclose(got["w"], want[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.rule_state.m["w"], m[0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(state.rule_state.v["w"], v[0], rtol=1e-4, atol=1e-9)
        assert int(state.rejected) == 1 and float(total) == weights[honest].sum()
        current = got


def test_codec_component_round_trips_like_the_codec():
    template = {"w": np.zeros((16,), np.float32)}
    component = codec_component(compression.uniform_quantization(8), template)
    state = component.init(jax.random.PRNGKey(1))
    x = {"w": np.linspace(-1, 1, 16).astype(np.float32)}
    state, payload = component.call("encode", state, x)
    _, decoded = component.call("decode", state, payload)
    np.testing.assert_allclose(decoded["w"], x["w"], atol=2 / 255 + 1e-6)


def test_selector_component_is_deterministic_and_advances_rounds():
    component = selector_component(selection.select_fraction(10, 0.3))
    state = component.init(jax.random.PRNGKey(2))
    state, first = component.call("sample", state)
    _, again = component.call("sample", component.init(jax.random.PRNGKey(2)))
    np.testing.assert_array_equal(first, again)
    assert first.shape == (3,) and len(set(np.asarray(first).tolist())) == 3
    assert int(state.round) == 1
    cohorts = {tuple(np.asarray(first).tolist())}
    for _ in range(5):  # later rounds draw new cohorts
        state, cohort = component.call("sample", state)
        cohorts.add(tuple(np.asarray(cohort).tolist()))
    assert len(cohorts) > 1
    _, view = component.call("current_view", state)
    np.testing.assert_array_equal(view, np.arange(10))
