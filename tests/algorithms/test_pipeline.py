"""chain(clip, gaussian_noise, fedadam) against the same steps by hand in float64 numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbjax import aggregators, privacy
from bbjax.algorithms import apply_updates, chain

C, Z, M = 0.6, 1.3, 8  # clipping norm, noise multiplier, num_sampled_clients
ETA, B1, B2, TAU = 0.05, 0.9, 0.99, 1e-3
SHAPES = {"b": (3,), "w": (4, 3)}  # jax flattens dict keys sorted: b, then w


def reference_round(params, updates, mask, noise, t, m, v):
    """One round in float64: clip each client's update to norm C, sum the valid ones over
    M, add N(0, (Z C / M)^2) (the standard normal draws given), then FedAdam with Flower's
    bias-corrected rate at 1-based round t."""
    rows = len(mask)
    flat = np.concatenate([updates[k].reshape(rows, -1) for k in SHAPES], axis=1)
    norms = np.linalg.norm(flat, axis=1)
    clipped = flat * np.minimum(1.0, C / np.where(norms > 0, norms, 1.0))[:, None]
    delta = clipped[mask].sum(axis=0) / M + Z * C / M * noise
    m = B1 * m + (1 - B1) * delta
    v = B2 * v + (1 - B2) * delta ** 2
    lr = ETA * np.sqrt(1 - B2 ** (t + 1)) / (1 - B1 ** (t + 1))
    return params + lr * m / (np.sqrt(v) + TAU), m, v


@pytest.mark.parametrize("seed", [0, 1])
def test_clip_noise_fedadam_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    rows = 6
    pipeline = chain(privacy.clip(C), privacy.gaussian_noise(Z, C, M),
                     aggregators.fedadam(eta=ETA, beta_1=B1, beta_2=B2, tau=TAU))
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in SHAPES.items()}
    state = pipeline.init(params)
    step = jax.jit(pipeline.update)
    size = sum(int(np.prod(s)) for s in SHAPES.values())
    ref = np.concatenate([np.asarray(params[k], np.float64).ravel() for k in SHAPES])
    m = v = np.zeros(size)
    for t in range(1, 4):
        scale = rng.choice([0.1, 1.0, 3.0], size=(rows, 1, 1))
        updates = {k: (scale.reshape((rows,) + (1,) * len(s)) * rng.normal(size=(rows, *s)))
                   .astype(np.float32) for k, s in SHAPES.items()}
        mask = rng.random(rows) < 0.8
        key = jax.random.key(100 * seed + t)
        delta, state = step(updates, state, params, key=key, mask=jnp.asarray(mask))
        params = apply_updates(params, delta)
        # the noise stage is member 1 of 3: its key is split(key, 3)[1]
        noise = np.asarray(jax.random.normal(jax.random.split(key, 3)[1], (size,), jnp.float32),
                           np.float64)
        ref, m, v = reference_round(ref, {k: np.asarray(x, np.float64)
                                          for k, x in updates.items()}, mask, noise, t, m, v)
        got = np.concatenate([np.asarray(params[k], np.float64).ravel() for k in SHAPES])
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-6)
    assert int(state[2].count) == 3
