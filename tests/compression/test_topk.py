import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.compression import payload_bytes, top_k

from bbjax.errors import CompressionError

SHAPES = [{"w": (6, 5), "b": (5,), "k": (2, 3, 4), "s": ()}, {"x": (300,), "y": (2, 2)}]


def _tree(shapes, seed):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def np_flat(tree):
    return np.concatenate([np.asarray(tree[k], np.float64).ravel() for k in sorted(tree)])


def np_top_k(a, k):
    """(sparse a keeping its k largest magnitudes, residual a − sparse), float64."""
    keep = np.argsort(-np.abs(a), kind="stable")[:k]
    sparse = np.zeros_like(a)
    sparse[keep] = a[keep]
    return sparse, a - sparse


def np_index_bytes(size):
    return 1 if size <= 2**8 else 2 if size <= 2**16 else 4


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("k", [1, 7])
def test_error_feedback_rounds_match_numpy(shapes, k):
    codec = top_k(k)
    template = _tree(shapes, 0)
    state = codec.init(template)
    residual = np.zeros(sum(x.size for x in template.values()))
    for round_index in range(3):
        tree = _tree(shapes, round_index + 1)
        state, payload, num_bytes = codec.encode(state, tree, None)
        decoded = codec.decode(payload)
        sparse, residual = np_top_k(np_flat(tree) + residual, k)
        np.testing.assert_allclose(np_flat(decoded), sparse, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np_flat(state), residual, rtol=1e-6, atol=1e-6)
        size = residual.size
        assert num_bytes == k * 4 + k * np_index_bytes(size) == payload_bytes(payload)
        for name, x in tree.items():
            assert decoded[name].shape == x.shape and decoded[name].dtype == x.dtype


def test_without_error_feedback_each_round_is_independent():
    codec = top_k(3, error_feedback=False)
    tree = _tree(SHAPES[0], 4)
    state = codec.init(tree)
    assert state == ()
    _, payload, _ = codec.encode(state, tree, None)
    np.testing.assert_allclose(
        np_flat(codec.decode(payload)), np_top_k(np_flat(tree), 3)[0], rtol=1e-6
    )


@given(seed=st.integers(0, 2**32 - 1), k=st.sampled_from([1, 4, 35]))
@settings(max_examples=12, deadline=None)
def test_error_feedback_conserves_the_signal_exactly(seed, k):
    codec = CODECS[k]
    rng = np.random.default_rng(seed)
    tree = {
        "a": rng.standard_normal((5, 7)).astype(np.float32),
        "b": rng.standard_normal(3).astype(np.float32),
    }
    old = {
        "a": rng.standard_normal((5, 7)).astype(np.float32),
        "b": rng.standard_normal(3).astype(np.float32),
    }
    new, payload, _ = codec.encode(old, tree, None)
    decoded = codec.decode(payload)
    for name in tree:
        np.testing.assert_array_equal(
            np.asarray(decoded[name]) + np.asarray(new[name]),
            (tree[name] + old[name]).astype(np.float32),
        )


CODECS = {k: top_k(k) for k in (1, 4, 35)}


@pytest.mark.parametrize("size,dtype", [(256, np.uint8), (257, np.uint16), (70000, np.uint32)])
def test_index_width_is_the_smallest_that_fits(size, dtype):
    codec = top_k(2, error_feedback=False)
    _, payload, num_bytes = codec.encode((), jnp.arange(size, dtype=jnp.float32), None)
    assert payload.indices.dtype == dtype
    assert num_bytes == 2 * 4 + 2 * np.dtype(dtype).itemsize
    np.testing.assert_array_equal(np.sort(np.asarray(payload.indices)), [size - 2, size - 1])


def test_vmapped_senders_keep_their_own_residuals():
    codec = top_k(2)
    stacked = jnp.asarray(np.random.default_rng(0).standard_normal((4, 6)), jnp.float32)
    states = jax.vmap(codec.init)(stacked)
    states, payloads, num_bytes = jax.vmap(codec.encode, (0, 0, None))(states, stacked, None)
    decoded = jax.vmap(codec.decode)(payloads)
    np.testing.assert_allclose(decoded + states, stacked, rtol=0, atol=0)
    np.testing.assert_array_equal(num_bytes, [2 * 4 + 2] * 4)


@pytest.mark.parametrize("k", [0, -1, 2.0, True])
def test_bad_k_raises(k):
    with pytest.raises(CompressionError, match="k must be"):
        top_k(k)


def test_k_larger_than_the_tree_raises():
    codec = top_k(11)
    with pytest.raises(CompressionError, match=r"k \(11\) exceeds"):
        codec.init({"a": jnp.zeros(4), "b": jnp.zeros((2, 3))})
    with pytest.raises(CompressionError, match=r"k \(11\) exceeds"):
        codec.encode((), jnp.zeros(10), None)
