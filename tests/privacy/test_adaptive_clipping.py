import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbjax.privacy import client_side_adaptive_clipping, server_side_adaptive_clipping, update_noise_multiplier

from bbjax.errors import PrivacyError

from ._stats import assert_normal


def np_adaptive_round(updates, mask, c, m, gamma, lr):
    """One noiseless round of Andrew et al. Algorithm 1 in float64: (mean, next C)."""
    updates = np.asarray(updates, np.float64)
    total = np.zeros(updates.shape[1:])
    unclipped = 0
    for u, valid in zip(updates, mask):
        if not valid:
            continue
        norm = np.linalg.norm(u)
        total += u * min(1.0, c / norm)
        unclipped += norm <= c
    return total / m, c * math.exp(-lr * (unclipped / m - gamma))


@pytest.mark.parametrize("z,sigma_b", [(1.0, 5.0), (0.5, 0.3), (2.0, 1.01)])
def test_update_noise_multiplier_formula(z, sigma_b):
    expected = (z**-2 - (2 * sigma_b) ** -2) ** -0.5
    assert update_noise_multiplier(z, sigma_b) == pytest.approx(expected, rel=1e-12)
    assert update_noise_multiplier(0.0, sigma_b) == 0.0


@pytest.mark.parametrize("build", [server_side_adaptive_clipping, client_side_adaptive_clipping])
def test_noiseless_rounds_match_numpy(build):
    m, gamma, lr = 6, 0.4, 0.3
    shapes = {"a": (7,), "b": (3, 4), "c": ()}
    rng = np.random.default_rng(0)
    dp = build(0.0, m, initial_clipping_norm=1.0, target_quantile=gamma, clip_norm_lr=lr)
    state = dp.init()
    aggregate, client = jax.jit(dp.aggregate), jax.jit(jax.vmap(dp.client, (None, 0)))
    c = 1.0
    for round_index in range(3):
        scales = rng.uniform(0.1, 1.5, 6)
        updates = {
            k: (rng.standard_normal((6, *s)) * scales.reshape((6,) + (1,) * len(s))).astype(
                np.float32
            )
            for k, s in shapes.items()
        }
        mask = rng.random(6) < 0.8
        contributions = client(state, updates)
        mean, state = aggregate(
            jax.random.key(round_index), state, contributions, jnp.asarray(mask)
        )
        flat = np.concatenate([updates[k].reshape(6, -1) for k in sorted(shapes)], axis=1)
        expected_mean, c = np_adaptive_round(flat, mask, c, m, gamma, lr)
        got = np.concatenate([np.asarray(mean[k]).reshape(-1) for k in sorted(shapes)])
        np.testing.assert_allclose(got, expected_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(state.clipping_norm), c, rtol=1e-5)


def test_server_and_client_side_agree_with_noise():
    updates = np.random.default_rng(1).standard_normal((40, 9)).astype(np.float32)
    outs = []
    for build in (server_side_adaptive_clipping, client_side_adaptive_clipping):
        dp = build(1.0, 40, initial_clipping_norm=2.0)
        contributions = jax.jit(jax.vmap(dp.client, (None, 0)))(dp.init(), updates)
        outs.append(jax.jit(dp.aggregate)(jax.random.key(3), dp.init(), contributions))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs[0][1].clipping_norm, outs[1][1].clipping_norm, rtol=1e-6)


def test_noise_on_update_and_count_has_the_documented_scale():
    z, m, c, gamma, lr, samples = 1.0, 100, 0.5, 0.5, 0.2, 4000
    sigma_b = m / 20
    z_update = (z**-2 - (2 * sigma_b) ** -2) ** -0.5
    updates = np.random.default_rng(2).standard_normal((m, 8)).astype(np.float32)
    dp = server_side_adaptive_clipping(
        z, m, initial_clipping_norm=c, target_quantile=gamma, clip_norm_lr=lr
    )
    run = jax.jit(jax.vmap(dp.aggregate, (0, None, None)))
    means, states = run(jax.random.split(jax.random.key(4), samples), dp.init(), updates)
    clean_mean, _ = np_adaptive_round(updates, np.ones(m, bool), c, m, gamma, lr)
    assert_normal(np.asarray(means, np.float64) - clean_mean, z_update * c / m)
    unclipped = np.sum(np.linalg.norm(updates.astype(np.float64), axis=1) <= c)
    noisy_fraction = gamma - np.log(np.asarray(states.clipping_norm, np.float64) / c) / lr
    assert_normal(noisy_fraction, sigma_b / m, mean=unclipped / m)


def test_clipping_norm_tracks_the_target_quantile():
    m, gamma = 101, 0.3
    norms = np.linspace(0.5, 1.5, m)
    directions = np.random.default_rng(5).standard_normal((m, 4))
    updates = (
        directions / np.linalg.norm(directions, axis=1, keepdims=True) * norms[:, None]
    ).astype(np.float32)
    dp = server_side_adaptive_clipping(0.0, m, initial_clipping_norm=0.1, target_quantile=gamma)

    def round_(state, key):
        return dp.aggregate(key, state, updates)[1], None

    state, _ = jax.lax.scan(round_, dp.init(), jax.random.split(jax.random.key(0), 300))
    assert float(state.clipping_norm) == pytest.approx(np.quantile(norms, gamma), abs=0.02)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(noise_multiplier=-1.0), "noise_multiplier"),
        (dict(num_sampled_clients=0), "num_sampled_clients"),
        (dict(initial_clipping_norm=0.0), "initial_clipping_norm"),
        (dict(target_quantile=1.5), "target_quantile"),
        (dict(target_quantile=-0.1), "target_quantile"),
        (dict(clip_norm_lr=0.0), "clip_norm_lr"),
        (dict(clipped_count_stddev=-1.0), "clipped_count_stddev"),
        (dict(noise_multiplier=1.0, num_sampled_clients=10), "clipped_count_stddev"),
        (dict(noise_multiplier=1.0, clipped_count_stddev=0.0), "clipped_count_stddev"),
    ],
)
@pytest.mark.parametrize("build", [server_side_adaptive_clipping, client_side_adaptive_clipping])
def test_bad_parameters_raise(build, kwargs, match):
    args = dict(noise_multiplier=0.5, num_sampled_clients=100) | kwargs
    with pytest.raises(PrivacyError, match=match):
        build(**args)
