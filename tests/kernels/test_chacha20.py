"""kernels.chacha20: the pure-jnp reference against pyca/cryptography's ChaCha20, the Pallas
kernel (interpret mode here, natively behind the gpu marker) against the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

import kernels.chacha20 as kc
from bbjax.errors import InvalidArgument


def _pyca_block(key: bytes, counter: int) -> bytes:
    nonce = counter.to_bytes(8, "little") + bytes(8)  # 64-bit counter, zero stream id
    return Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(bytes(64))


def _as_bytes(planes, index) -> bytes:
    return np.array([int(p[index]) for p in planes], "<u4").tobytes()


def _random(rng, shape):
    return rng.integers(0, 2**32, shape, dtype=np.uint64).astype(np.uint32)


def test_rfc8439_block_with_zero_key_and_counter():
    # RFC 8439 A.1, test vector 1 (all-zero key, nonce and counter)
    expected = bytes.fromhex(
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
        "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586")
    zero = jnp.zeros((1,), jnp.uint32)
    planes = kc.chacha20_blocks_reference(jnp.zeros((1, 8), jnp.uint32), zero, zero)
    assert _as_bytes(planes, 0) == expected


def test_reference_matches_cryptography_on_random_keys_and_64_bit_counters():
    rng = np.random.default_rng(0)
    keys = _random(rng, (4, 8))
    lo = _random(rng, (4, 3))
    lo[0] = [0, 0xFFFFFFFF, 1]
    hi = _random(rng, (4, 3))
    hi[1] = 0
    planes = kc.chacha20_blocks_reference(jnp.asarray(keys)[:, None, :],
                                          jnp.asarray(lo), jnp.asarray(hi))
    assert all(p.shape == (4, 3) and p.dtype == jnp.uint32 for p in planes)
    for i in range(4):
        for j in range(3):
            counter = int(lo[i, j]) + (int(hi[i, j]) << 32)
            assert _as_bytes(planes, (i, j)) == _pyca_block(keys[i].tobytes(), counter)


def test_pallas_kernel_in_interpret_mode_matches_reference():
    rng = np.random.default_rng(1)
    keys = jnp.asarray(_random(rng, (3, 1, 8)))
    lo, hi = jnp.asarray(_random(rng, (3, 90))), jnp.asarray(_random(rng, (1, 90)))
    expected = kc.chacha20_blocks_reference(keys, lo, hi)
    got = kc.chacha20_blocks_pallas(keys, lo, hi, tile_rows=1, interpret=True)  # 3 grid steps
    assert len(got) == 16
    for g, e in zip(got, expected):
        assert g.shape == (3, 90)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(e))


def test_selector_picks_the_kernel_on_accelerators(monkeypatch):
    calls = []
    monkeypatch.setattr(kc, "chacha20_blocks_pallas", lambda *a: calls.append("pallas") or ())
    monkeypatch.setattr(kc, "chacha20_blocks_reference", lambda *a: calls.append("jnp") or ())
    args = (jnp.zeros((1, 8), jnp.uint32), jnp.zeros((1,), jnp.uint32), jnp.zeros((1,), jnp.uint32))
    for backend in ("gpu", "tpu", "cpu"):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        kc.chacha20_blocks(*args)
    assert calls == ["pallas", "pallas", "jnp"]


@pytest.mark.parametrize("keys, lo, hi, what", [
    (jnp.zeros((2, 7), jnp.uint32), jnp.zeros((2,), jnp.uint32), jnp.zeros((2,), jnp.uint32), "[..., 8]"),
    (jnp.zeros((2, 8), jnp.int32), jnp.zeros((2,), jnp.uint32), jnp.zeros((2,), jnp.uint32), "uint32"),
    (jnp.zeros((2, 8), jnp.uint32), jnp.zeros((3,), jnp.uint32), jnp.zeros((3,), jnp.uint32), "broadcast"),
])
def test_bad_inputs_raise_invalid_argument(keys, lo, hi, what):
    for fn in (kc.chacha20_blocks_reference, kc.chacha20_blocks_pallas):
        with pytest.raises(InvalidArgument, match=what):
            fn(keys, lo, hi)


@pytest.mark.gpu
def test_pallas_kernel_on_the_accelerator_matches_reference():
    rng = np.random.default_rng(2)
    keys = jnp.asarray(_random(rng, (64, 1, 8)))
    lo, hi = jnp.asarray(_random(rng, (64, 4096))), jnp.asarray(_random(rng, (64, 4096)))
    for g, e in zip(kc.chacha20_blocks_pallas(keys, lo, hi), kc.chacha20_blocks_reference(keys, lo, hi)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(e))
