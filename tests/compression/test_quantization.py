import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.compression import pack_bits, payload_bytes, stochastic_quantization, uniform_quantization, unpack_bits

from bbjax.errors import CompressionError

SHAPES = {"w": (6, 5), "b": (5,), "x": (33,), "k": (2, 3, 4), "s": ()}


def _tree(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {
        k: (rng.standard_normal(s) * rng.uniform(0.1, 3)).astype(np.float32)
        for k, s in shapes.items()
    }


def np_grid(x, bits):
    """(u, lo, step): x's position on the 2^bits-level grid between its min and max, float64."""
    x = np.asarray(x, np.float64).ravel()
    lo, hi = x.min(), x.max()
    levels = 2**bits - 1
    step = (hi - lo) / levels
    u = (x - lo) / step if hi > lo else np.zeros_like(x)
    return u, lo, step


def np_wire_bytes(shapes, bits):
    return sum(math.ceil(math.prod(s) * bits / 8) + 8 for s in shapes.values())


@given(
    bits=st.integers(1, 16), count=st.sampled_from([0, 1, 7, 40]), seed=st.integers(0, 2**32 - 1)
)
@settings(max_examples=12, deadline=None)
def test_pack_bits_is_numpys_little_endian_packbits(bits, count, seed):
    codes = np.random.default_rng(seed).integers(0, 2**bits, count, dtype=np.uint32)
    bit_matrix = (codes[:, None] >> np.arange(bits, dtype=np.uint32)) & 1
    expected = np.packbits(bit_matrix.astype(np.uint8).ravel(), bitorder="little")
    packed = pack_bits(jnp.asarray(codes), bits)
    np.testing.assert_array_equal(packed, expected)
    np.testing.assert_array_equal(unpack_bits(packed, bits, count), codes)


@pytest.mark.parametrize("bits", [1, 3, 12])
def test_uniform_quantization_matches_numpy(bits):
    shapes = SHAPES
    tree = _tree(shapes, seed=bits)
    codec = uniform_quantization(bits)
    _, payload, num_bytes = jax.jit(codec.encode)(codec.init(tree), tree, None)
    decoded = jax.jit(codec.decode)(payload)
    assert int(num_bytes) == np_wire_bytes(shapes, bits) == payload_bytes(payload)
    for k, x in tree.items():
        u, lo, step = np_grid(x, bits)
        expected = lo + np.round(u) * step
        got = np.asarray(decoded[k], np.float64).ravel()
        assert decoded[k].shape == x.shape and decoded[k].dtype == x.dtype
        # float32 arithmetic may round a value sitting almost exactly between two levels either way
        tie = np.abs(u - np.floor(u) - 0.5) < 1e-3
        np.testing.assert_allclose(got[~tie], expected[~tie], rtol=0, atol=1e-5 * max(step, 1.0))
        assert np.all(
            np.abs(got - np.asarray(x, np.float64).ravel()) <= step / 2 * (1 + 1e-3) + 1e-6
        )


def test_constant_leaf_is_exact():
    codec = uniform_quantization(2)
    tree = {"c": jnp.full((4, 3), 1.25, jnp.float32), "bf": jnp.ones(3, jnp.bfloat16)}
    decoded = codec.decode(codec.encode((), tree, None)[1])
    np.testing.assert_array_equal(decoded["c"], tree["c"])
    assert decoded["bf"].dtype == jnp.bfloat16


@pytest.mark.parametrize("bits", [1, 4])
def test_stochastic_quantization_rounds_to_a_neighbouring_level(bits):
    shapes = SHAPES
    tree = _tree(shapes, seed=10 + bits)
    codec = stochastic_quantization(bits)
    _, payload, num_bytes = jax.jit(codec.encode)(codec.init(tree), tree, jax.random.key(bits))
    assert int(num_bytes) == np_wire_bytes(shapes, bits)
    decoded = codec.decode(payload)
    for k, x in tree.items():
        u, lo, step = np_grid(x, bits)
        if step == 0:  # a constant leaf (here the scalar) is sent exactly
            np.testing.assert_array_equal(decoded[k], x)
            continue
        level = (np.asarray(decoded[k], np.float64).ravel() - lo) / step
        assert np.all((np.abs(level - np.floor(u)) < 1e-3) | (np.abs(level - np.ceil(u)) < 1e-3))


@pytest.mark.parametrize("bits", [1, 3])
def test_stochastic_quantization_is_unbiased(bits):
    samples = 4000
    x = np.random.default_rng(bits).standard_normal(24).astype(np.float32)
    codec = stochastic_quantization(bits)

    def roundtrip(key):
        return codec.decode(codec.encode((), x, key)[1])

    decoded = np.asarray(
        jax.jit(jax.vmap(roundtrip))(jax.random.split(jax.random.key(0), samples)), np.float64
    )
    u, lo, step = np_grid(x, bits)
    p = u - np.floor(u)
    standard_error = step * np.sqrt(p * (1 - p) / samples)
    float_tolerance = 1e-5 * step
    assert np.all(np.abs(decoded.mean(axis=0) - x) <= 5 * standard_error + float_tolerance)


UNIFORM = {bits: uniform_quantization(bits) for bits in (1, 2, 5, 8)}


@given(
    values=st.lists(st.floats(-1e4, 1e4, width=32, allow_subnormal=False), min_size=8, max_size=8),
    bits=st.sampled_from(sorted(UNIFORM)),
)
@settings(max_examples=20, deadline=None)
def test_uniform_error_is_at_most_half_a_step(values, bits):
    x = np.asarray(values, np.float32)
    codec = UNIFORM[bits]
    decoded = np.asarray(codec.decode(codec.encode((), x, None)[1]), np.float64)
    _, _, step = np_grid(x, bits)
    assert np.all(np.abs(decoded - x) <= step / 2 + 1e-6 * (np.abs(x).max() + 1))


def test_vmapped_encode_counts_bytes_per_sender():
    codec = stochastic_quantization(4)
    stacked = np.zeros((3, 10), np.float32)
    _, payload, num_bytes = jax.vmap(codec.encode, (None, 0, 0))(
        (), stacked, jax.random.split(jax.random.key(0), 3)
    )
    np.testing.assert_array_equal(num_bytes, [5 + 8] * 3)
    assert payload.packed.shape == (3, 5)


@pytest.mark.parametrize("bits", [0, 17, 2.5, True])
@pytest.mark.parametrize("build", [uniform_quantization, stochastic_quantization])
def test_bad_bits_raise(build, bits):
    with pytest.raises(CompressionError, match="bits"):
        build(bits)


def test_stochastic_needs_a_key_and_float_leaves():
    with pytest.raises(CompressionError, match="key"):
        stochastic_quantization(2).encode((), jnp.ones(3), None)
    with pytest.raises(CompressionError, match="float"):
        uniform_quantization(2).encode((), jnp.ones(3, jnp.int32), None)
