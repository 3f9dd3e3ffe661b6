"""bbjax.protocols.pet.chacha20: the JAX keystream of mask seeds against pyca/cryptography's
ChaCha20 (16-byte zero nonce, as rand_chacha's ChaCha20Rng) and xaynet's published draws."""

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from bbjax.errors import MaskingError
from bbjax.protocols.pet import chacha20
from bbjax.protocols.pet.seed import MaskSeed


def _pyca(key: bytes, n_bytes: int, start_block: int = 0) -> bytes:
    nonce = start_block.to_bytes(8, "little") + bytes(8)
    return Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(bytes(n_bytes))


def test_keystream_matches_cryptography_for_random_seeds_and_lengths():
    rng = np.random.default_rng(0)
    seeds = [rng.bytes(32) for _ in range(3)]
    words = np.asarray(chacha20.keystream(chacha20.seed_words(seeds), 16 * 9 + 5))
    assert words.shape == (3, 149) and words.dtype == np.uint32
    for seed, row in zip(seeds, words):
        for n in (1, 15, 16, 17, 149, int(rng.integers(1, 149))):
            assert row[:n].astype("<u4").tobytes() == _pyca(seed, 4 * n)


def test_keystream_counter_is_64_bit_across_the_2_to_32_block_boundary():
    seed = np.random.default_rng(1).bytes(32)
    start = 2**32 - 2
    words = np.asarray(chacha20.keystream(chacha20.seed_words([seed]), 64, start_block=start))[0]
    # cryptography refuses to run its 32-bit counter half over, so compare block by block
    for b in range(4):
        block = words[16 * b : 16 * (b + 1)].astype("<u4").tobytes()
        assert block == _pyca(seed, 64, start + b)


def test_keystream_reproduces_xaynets_published_generate_integer_values():
    # xaynet-core crypto/prng.rs test_generate_integer: seed 0, max (2**128 - 1)**2; every
    # 32-byte draw is accepted, so the draws are the keystream's 32-byte little-endian chunks
    words = np.asarray(chacha20.keystream(chacha20.seed_words([bytes(32)]), 16))[0]
    draws = [int.from_bytes(words[8 * i : 8 * (i + 1)].astype("<u4").tobytes(), "little")
             for i in range(2)]
    assert draws == [
        90034050956742099321159087842304570510687605373623064829879336909608119744630,
        60790020689334235010238064028215988394112077193561636249125918224917556969946,
    ]


def test_seed_words_accept_seeds_bytes_and_arrays_alike():
    rng = np.random.default_rng(2)
    raw = [rng.bytes(32) for _ in range(2)]
    expected = np.frombuffer(b"".join(raw), "<u4").reshape(2, 8)
    for form in (raw, [MaskSeed(r) for r in raw], np.frombuffer(b"".join(raw), np.uint8).reshape(2, 32)):
        got = chacha20.seed_words(form)
        assert got.dtype == np.uint32 and got.shape == (2, 8)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("bad", [[b"short"], [None], np.zeros((2, 31), np.uint8), np.zeros((2, 32), np.int8)])
def test_seed_words_refuse_what_is_no_seed(bad):
    with pytest.raises(MaskingError, match="seeds"):
        chacha20.seed_words(bad)


@pytest.mark.parametrize("kwargs", [{"n_words": 0}, {"n_words": 4, "start_block": -1},
                                    {"n_words": 4, "start_block": 2**64}])
def test_keystream_refuses_bad_lengths_and_counters(kwargs):
    with pytest.raises(MaskingError):
        chacha20.keystream(np.zeros((1, 8), np.uint32), **kwargs)
