import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.privacy import client_side_fixed_clipping, clip_by_global_norm, global_norm, server_side_fixed_clipping

from bbjax.errors import PrivacyError

from ._stats import assert_normal

SHAPES = {"w": (3, 4), "b": (4,), "x": (17,), "k": (2, 3, 5), "s": ()}


def _random_tree(rng, shapes, scale=1.0, lead=()):
    return {
        k: (scale * rng.standard_normal(lead + s)).astype(np.float32) for k, s in shapes.items()
    }


def np_clip(tree, c):
    norm = np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in tree.values()))
    scale = min(1.0, c / norm) if norm > 0 else 1.0
    return {k: np.asarray(x, np.float64) * scale for k, x in tree.items()}, norm


def np_dp_mean(stacked, c, n, mask, clip=True):
    rows = len(next(iter(stacked.values())))
    total = None
    for i in range(rows):
        if not mask[i]:
            continue
        row = {k: np.asarray(v[i], np.float64) for k, v in stacked.items()}
        if clip:
            row = np_clip(row, c)[0]
        total = row if total is None else {k: total[k] + row[k] for k in row}
    return {k: v / n for k, v in total.items()}


@pytest.mark.parametrize("scale", [0.01, 3.0])
def test_clip_matches_numpy(scale):
    tree = _random_tree(np.random.default_rng(0), SHAPES, scale)
    expected, norm = np_clip(tree, 1.5)
    clipped, got_norm = jax.jit(clip_by_global_norm)(tree, 1.5)
    np.testing.assert_allclose(got_norm, norm, rtol=1e-6)
    np.testing.assert_allclose(global_norm(tree), norm, rtol=1e-6)
    for k in tree:
        np.testing.assert_allclose(clipped[k], expected[k], rtol=1e-5, atol=1e-7)


def test_zero_tree_is_unchanged():
    clipped, norm = clip_by_global_norm({"a": jnp.zeros(3)}, 1.0)
    assert float(norm) == 0.0 and not np.isnan(np.asarray(clipped["a"])).any()


@given(
    values=st.lists(st.floats(-1e3, 1e3, width=32, allow_subnormal=False), min_size=1, max_size=8),
    c=st.floats(1e-3, 1e3),
)
@settings(max_examples=25, deadline=None)
def test_clipped_norm_is_bounded_and_direction_kept(values, c):
    x = np.asarray(values, np.float32)
    clipped, norm = clip_by_global_norm(x, c)
    clipped = np.asarray(clipped, np.float64)
    assert np.linalg.norm(clipped) <= c * (1 + 1e-5)
    if norm <= c:
        np.testing.assert_array_equal(clipped, x)
    else:
        np.testing.assert_allclose(
            clipped * np.linalg.norm(x) / c, x, rtol=1e-4, atol=1e-4 * np.abs(x).max()
        )


@pytest.mark.parametrize("build", [server_side_fixed_clipping, client_side_fixed_clipping])
def test_noiseless_mean_matches_numpy(build):
    rng = np.random.default_rng(1)
    stacked = _random_tree(rng, SHAPES, 2.0, lead=(6,))
    mask = np.array([1, 1, 0, 1, 1, 1], bool)
    dp = build(0.0, 0.8, 8)
    state = dp.init()
    contributions = jax.jit(jax.vmap(dp.client, (None, 0)))(state, stacked)
    mean, new_state = jax.jit(dp.aggregate)(
        jax.random.key(0), state, contributions, jnp.asarray(mask)
    )
    expected = np_dp_mean(stacked, 0.8, 8, mask)
    for k in expected:
        np.testing.assert_allclose(mean[k], expected[k], rtol=1e-5, atol=1e-7)
    assert float(new_state.clipping_norm) == pytest.approx(0.8)


def test_server_and_client_side_agree_with_noise():
    stacked = _random_tree(np.random.default_rng(2), SHAPES, 1.0, lead=(5,))
    results = []
    for build in (server_side_fixed_clipping, client_side_fixed_clipping):
        dp = build(1.3, 0.5, 5)
        state = dp.init()
        contributions = jax.jit(jax.vmap(dp.client, (None, 0)))(state, stacked)
        results.append(jax.jit(dp.aggregate)(jax.random.key(7), state, contributions)[0])
    for k in results[0]:
        np.testing.assert_allclose(results[0][k], results[1][k], rtol=1e-5, atol=1e-6)


def test_noise_has_the_documented_scale():
    z, c, n = 1.7, 0.3, 4
    stacked = {"w": np.random.default_rng(3).standard_normal((4, 20000)).astype(np.float32)}
    dp = server_side_fixed_clipping(z, c, n)
    mean, _ = jax.jit(dp.aggregate)(jax.random.key(11), dp.init(), stacked)
    clean = np_dp_mean(stacked, c, n, np.ones(4, bool))
    assert_normal(np.asarray(mean["w"], np.float64) - clean["w"], z * c / n)


@pytest.mark.parametrize(
    "args,match",
    [
        ((-0.1, 1.0, 10), "noise_multiplier"),
        ((1.0, 0.0, 10), "clipping_norm"),
        ((1.0, float("inf"), 10), "clipping_norm"),
        ((1.0, 1.0, 0), "num_sampled_clients"),
        ((1.0, 1.0, 2.5), "num_sampled_clients"),
    ],
)
@pytest.mark.parametrize("build", [server_side_fixed_clipping, client_side_fixed_clipping])
def test_bad_parameters_raise(build, args, match):
    with pytest.raises(PrivacyError, match=match):
        build(*args)
