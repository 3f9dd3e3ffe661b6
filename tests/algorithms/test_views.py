"""The families' own entry points and their algorithms are one computation: rules' apply
and update, CentralDP and the DP algorithms, codecs and compress, selectors' select and
algorithm."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbjax import aggregators, compression, privacy, selection
from bbjax.errors import AggregatorError, CompressionError, SelectionError

from .common import N, SHAPES, inputs, tree

RULES = ["fedavg", "fedavgm", "fedadagrad", "fedadam", "fedyogi", "qfedavg", "median",
         "trimmed_mean", "krum", "bulyan", "scaffold"]
HYPER = {"fedavgm": dict(server_learning_rate=0.7, server_momentum=0.9),
         "krum": dict(num_malicious=0, num_to_keep=2), "scaffold": dict(num_clients=10)}


@pytest.mark.parametrize("name", RULES)
def test_update_on_deltas_is_apply_on_models(name):
    rule = getattr(aggregators, name)(**HYPER.get(name, {}))
    updates, g, extra = inputs(name, 3)
    weights, mask = extra.pop("weights"), extra.pop("mask")
    clients = jax.tree.map(lambda gl, u: gl + u, g, updates)

    @jax.jit
    def both(state):
        return (rule.apply(state, g, clients, weights, mask, **extra),
                rule.update(updates, state, g, weights=weights, mask=mask, **extra))

    state = rule.init(g)
    for _ in range(2):  # a second round from the first round's state
        out, (delta, new_state) = both(state)
        chex.assert_trees_all_close(jax.tree.map(jnp.add, g, delta), out.params,
                                    rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(new_state, out.state, rtol=1e-5, atol=1e-6)
        state = out.state


def test_a_skipped_round_is_a_zero_update():
    rule = aggregators.fedadam()
    updates, g, _ = inputs("fedadam", 4)
    state = rule.init(g)
    delta, new_state = jax.jit(rule.update)(updates, state, g, mask=np.zeros(N, bool))
    assert all(not np.asarray(x).any() for x in jax.tree.leaves(delta))
    chex.assert_trees_all_equal((new_state.m, new_state.v), (state.m, state.v))


def test_rule_update_refuses_what_it_cannot_read():
    updates, g, _ = inputs("median", 5)
    one = jax.tree.map(lambda x: x[0], updates)
    with pytest.raises(AggregatorError, match="median reduces a stack"):
        aggregators.median().update(one, (), g)
    with pytest.raises(AggregatorError, match="needs params"):
        aggregators.fedavg().update(updates, ())
    with pytest.raises(AggregatorError, match=r"unknown inputs \['loss'\]"):
        aggregators.qfedavg().update(updates, (), g, loss=np.ones(N))
    with pytest.raises(AggregatorError, match="needs the clients' losses"):
        aggregators.qfedavg().update(updates, (), g)
    with pytest.raises(AggregatorError, match="control_deltas"):
        aggregators.scaffold().apply(aggregators.scaffold().init(g), g, updates, np.ones(N))


def test_fixed_and_adaptive_central_dp_run_their_algorithms():
    updates, _, extra = inputs("clip", 6)
    mask, key = extra["mask"], jax.random.key(9)
    fixed = privacy.server_side_fixed_clipping(1.1, 0.5, 7)
    adaptive = privacy.client_side_adaptive_clipping(0.5, N, clipped_count_stddev=1.0)
    alg = privacy.adaptive_clipping(0.5, N, clipped_count_stddev=1.0)
    local = privacy.local_gaussian(0.5, 2.0, 1e-5)

    @jax.jit
    def views(updates):
        noised = privacy.gaussian_noise(1.1, 0.5, 7).update(
            privacy.clip(0.5).update(updates, ())[0], (), key=jax.random.split(key, 2)[1],
            mask=mask)[0]
        sent = jax.vmap(adaptive.client, (None, 0))(adaptive.init(), updates)
        return ((fixed.aggregate(key, fixed.init(), updates, mask)[0], noised),
                (adaptive.aggregate(key, adaptive.init(), sent, mask),
                 alg.update(updates, alg.init(None), key=key, mask=mask)),  # server clips
                (local.algorithm.update(updates, (), key=key)[0],
                 jax.vmap(local.privatize)(jax.random.split(key, N), updates)))

    for by_view, by_algorithm in views(updates):
        chex.assert_trees_all_close(by_view, by_algorithm, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("codec", [compression.uniform_quantization(3),
                                   compression.stochastic_quantization(2)])
def test_compress_is_decode_of_encode_per_row(codec):
    updates, params, _ = inputs("clip", 7)
    key = jax.random.key(2)
    out, state = compression.compress(codec).update(updates, compression.compress(codec)
                                                    .init(params), key=key)
    keys = jax.random.split(key, N)
    for i in range(N):
        row = jax.tree.map(lambda x: x[i], updates)
        expected = codec.decode(codec.encode(codec.init(params), row, keys[i])[1])
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], out), expected,
                                    rtol=1e-6, atol=1e-7)
    assert state == ()


def test_error_feedback_residuals_follow_the_clients():
    """Rows are sampled clients: each one's residual is read and written at its id, masked
    rows and clients not in the round keep theirs, and decoded + residual is exact."""
    population, k = 9, 3
    alg = compression.compress(compression.top_k(k), num_clients=population)
    rng = np.random.default_rng(11)
    params = tree(rng)
    state = alg.init(params)
    assert all(x.shape[0] == population for x in jax.tree.leaves(state))
    residual = {name: np.zeros((population, *s)) for name, s in SHAPES.items()}
    step = jax.jit(alg.update)
    for _ in range(3):
        clients = rng.permutation(population)[:N]
        mask = rng.random(N) < 0.7
        updates = tree(rng, (N,))
        out, state = step(updates, state, clients=jnp.asarray(clients, jnp.int32),
                          mask=jnp.asarray(mask))
        for name in SHAPES:
            sent = np.asarray(updates[name], np.float64) + residual[name][clients]
            got = np.asarray(out[name], np.float64)
            kept = np.asarray(state[name], np.float64)
            # conservation for the rows that took part; the others keep their residual
            np.testing.assert_allclose((got + kept[clients])[mask], sent[mask], atol=1e-6)
            residual[name][clients[mask]] = kept[clients[mask]]
        for name in SHAPES:
            np.testing.assert_allclose(np.asarray(state[name]), residual[name], atol=1e-6)
        flat = np.concatenate([np.asarray(out[n]).reshape(N, -1) for n in SHAPES], axis=1)
        assert ((flat != 0).sum(axis=1) <= k).all()
    with pytest.raises(CompressionError, match="num_clients"):
        compression.compress(compression.top_k(k)).init(params)
    with pytest.raises(CompressionError, match="clients=ids"):
        alg.update(updates, state)


def test_selectors_algorithm_is_select_among_candidates():
    num_clients, samples = 10, 1000
    selector = selection.select_fraction(num_clients, 0.3)
    available = selection.select_available(num_clients, np.full(num_clients, 0.5))
    keys = jax.random.split(jax.random.key(0), samples)
    everyone = jnp.ones(num_clients, bool)
    candidates = jnp.asarray(np.arange(num_clients) % 2 == 0)  # 5 candidates

    @jax.jit
    @jax.vmap
    def draw(key):
        return (selector.algorithm.update(everyone, (), key=key)[0],
                selection.cohort_mask(selector.select(key), num_clients),
                selector.algorithm.update(candidates, (), key=key)[0],
                available.algorithm.update(candidates, (), key=key, round=3)[0])

    all_in, direct, among, online = (np.asarray(x) for x in draw(keys))
    np.testing.assert_array_equal(all_in, direct)
    assert (among.sum(axis=1) == 3).all() and not among[:, 1::2].any()
    p = 3 / 5
    np.testing.assert_array_less(np.abs(among[:, ::2].mean(axis=0) - p),
                                 5 * np.sqrt(p * (1 - p) / samples))
    assert not online[:, 1::2].any()
    np.testing.assert_array_less(np.abs(online[:, ::2].mean(axis=0) - 0.5),
                                 5 * np.sqrt(0.25 / samples))
    with pytest.raises(SelectionError, match="bool"):
        selector.algorithm.update(jnp.ones(num_clients, jnp.int32), (), key=keys[0])
    with pytest.raises(SelectionError, match="key"):
        selector.algorithm.update(everyone, ())
