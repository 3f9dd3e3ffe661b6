import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import hadamard

from bbjax.compression import fwht, hadamard_rotation, stochastic_quantization, top_k, uniform_quantization

from bbjax.errors import CompressionError

SHAPES = {"w": (6, 5), "b": (5,), "x": (64,), "k": (2, 3, 3), "s": ()}


def _tree(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def np_padded(size):
    d = 1
    while d < size:
        d *= 2
    return d


@pytest.mark.parametrize("d", [1, 2, 8, 64])
def test_fwht_is_the_sylvester_hadamard_matrix(d):
    x = np.random.default_rng(d).standard_normal(d)
    np.testing.assert_allclose(
        fwht(jnp.asarray(x, jnp.float32)), hadamard(d) @ x, rtol=1e-5, atol=1e-5
    )


def test_rotation_round_trip_is_nearly_lossless_with_16_bits():
    shapes = SHAPES
    tree = _tree(shapes)
    codec = hadamard_rotation(uniform_quantization(16))
    _, payload, num_bytes = codec.encode(codec.init(tree), tree, jax.random.key(0))
    decoded = codec.decode(payload)
    expected_bytes = 8 + sum(2 * np_padded(int(np.prod(s))) + 8 for s in shapes.values())
    assert num_bytes == expected_bytes
    for k, x in tree.items():
        assert decoded[k].shape == x.shape and decoded[k].dtype == x.dtype
        np.testing.assert_allclose(decoded[k], x, atol=1e-3 * np.abs(x).max())


def test_rotation_is_orthogonal_and_uses_the_sent_signs():
    x = np.random.default_rng(1).standard_normal(13).astype(np.float32)
    codec = hadamard_rotation(uniform_quantization(16))
    _, payload, _ = codec.encode((), {"x": x}, jax.random.key(3))
    rotated = np.asarray(uniform_quantization(16).decode(payload.inner)["x"], np.float64)
    d = np_padded(13)
    signs = np.asarray(jax.random.rademacher(jax.random.wrap_key_data(payload.rotation_key), (d,)))
    expected = hadamard(d) @ (signs * np.pad(x.astype(np.float64), (0, d - 13))) / np.sqrt(d)
    np.testing.assert_allclose(rotated, expected, atol=1e-3)
    assert np.linalg.norm(rotated) == pytest.approx(np.linalg.norm(x), rel=1e-3)


def test_rotated_stochastic_quantization_is_unbiased():
    samples = 3000
    x = np.random.default_rng(2).standard_normal(20).astype(np.float32)
    codec = hadamard_rotation(stochastic_quantization(2))

    def roundtrip(key):
        return codec.decode(codec.encode((), x, key)[1])

    decoded = np.asarray(
        jax.jit(jax.vmap(roundtrip))(jax.random.split(jax.random.key(0), samples)), np.float64
    )
    standard_error = decoded.std(axis=0, ddof=1) / np.sqrt(samples)
    assert np.all(np.abs(decoded.mean(axis=0) - x) <= 5 * standard_error + 1e-5)


def test_rotation_shrinks_quantization_error_on_spiky_vectors():
    x = np.zeros(256, np.float32)
    x[7] = 50.0
    x += np.random.default_rng(3).standard_normal(256).astype(np.float32) * 0.1
    keys = jax.random.split(jax.random.key(1), 200)

    def mse(codec):
        def error(key):
            return jnp.mean((codec.decode(codec.encode((), x, key)[1]) - x) ** 2)

        return float(jnp.mean(jax.jit(jax.vmap(error))(keys)))

    assert mse(hadamard_rotation(stochastic_quantization(2))) < 0.5 * mse(
        stochastic_quantization(2)
    )


def test_inner_state_is_kept_on_the_rotated_leaves():
    codec = hadamard_rotation(top_k(3))
    tree = _tree({"w": (6, 5), "b": (5,)})
    state = codec.init(tree)
    assert {k: v.shape for k, v in state.items()} == {"w": (32,), "b": (8,)}
    new_state, payload, _ = codec.encode(state, tree, jax.random.key(0))
    assert jax.tree.map(jnp.shape, new_state) == jax.tree.map(jnp.shape, state)


def test_raw_uint32_keys_are_accepted():
    codec = hadamard_rotation(uniform_quantization(16))
    x = np.arange(5, dtype=np.float32)
    decoded = codec.decode(codec.encode((), x, jax.random.PRNGKey(0))[1])
    np.testing.assert_allclose(decoded, x, atol=1e-3)


def test_rotation_needs_a_key():
    with pytest.raises(CompressionError, match="key"):
        hadamard_rotation(uniform_quantization(4)).encode((), jnp.ones(4), None)
