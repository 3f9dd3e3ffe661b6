"""Prng against xaynet's published draws and a word-by-word reference over the raw keystream."""

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.errors import MaskingError
from bbjax.protocols.pet.config import MaskConfig
from bbjax.protocols.pet.prng import Prng


def _keystream(seed: bytes, n: int) -> bytes:
    return Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor().update(bytes(n))


def _reference_integers(seed: bytes, max_int: int, count: int) -> list[int]:
    """generate_integer, one candidate at a time: len(to_bytes_le) bytes per candidate, each
    draw rounded up to whole 4-byte words."""
    nbytes = (max_int.bit_length() + 7) // 8
    stride = -(-nbytes // 4) * 4
    stream = _keystream(seed, stride * (count * 1000 + 64))
    out, pos = [], 0
    while len(out) < count:
        assert pos + stride <= len(stream), "reference keystream too short"
        candidate = int.from_bytes(stream[pos : pos + nbytes], "little")
        pos += stride
        if candidate < max_int:
            out.append(candidate)
    return out


def test_xaynet_generate_integer_values():
    # xaynet-core crypto/prng.rs, test_generate_integer
    prng = Prng(bytes(32))
    max_int = (2**128 - 1) ** 2
    assert [prng.integer(max_int) for _ in range(5)] == [
        90034050956742099321159087842304570510687605373623064829879336909608119744630,
        60790020689334235010238064028215988394112077193561636249125918224917556969946,
        107415344426328791036720294006773438815099086866510488084511304829720271980447,
        50343610553303623842889112417183549658912134525854625844144939347139411162921,
        42382469383990928111449714288937630103705168010724718767641573929365517895981,
    ]


def test_xaynet_values_batched():
    assert Prng(bytes(32)).integers((2**128 - 1) ** 2, 2) == [
        90034050956742099321159087842304570510687605373623064829879336909608119744630,
        60790020689334235010238064028215988394112077193561636249125918224917556969946,
    ]


def test_fill_bytes_consumes_whole_words():
    seed = os.urandom(32)
    stream = _keystream(seed, 64)
    prng = Prng(seed)
    assert prng.fill_bytes(6) == stream[0:6]  # the 2 bytes left in word 1 are discarded
    assert prng.fill_bytes(6) == stream[8:14]
    assert prng.fill_bytes(0) == b""
    assert prng.fill_bytes(1) == stream[16:17]
    assert prng.fill_bytes(8) == stream[20:28]


def test_fill_bytes_across_refills():
    seed = os.urandom(32)
    prng = Prng(seed)
    sizes = [3, 70_001, 5, 65_536, 9]
    stream = _keystream(seed, sum(-(-n // 4) * 4 for n in sizes))
    pos = 0
    for n in sizes:
        assert prng.fill_bytes(n) == stream[pos : pos + n]
        pos += -(-n // 4) * 4


MAX_INTS = [1, 2, 3, 255, 256, 257, 2**32, 2**64 - 1, 2**64, 2**64 + 1, 2**128,
            MaskConfig("Prime", "F32", "B0", "M3").order,
            MaskConfig("Power2", "F64", "B6", "M12").order,  # 2^128: 17-byte draws
            MaskConfig("Prime", "F64", "Bmax", "M3").order]


@pytest.mark.parametrize("max_int", MAX_INTS)
def test_integer_and_integers_equal_the_reference(max_int):
    seed = os.urandom(32)
    expected = _reference_integers(seed, max_int, 40)
    one_by_one = Prng(seed)
    assert [one_by_one.integer(max_int) for _ in range(40)] == expected
    assert Prng(seed).integers(max_int, 40) == expected
    assert all(0 <= v < max_int for v in expected)


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(1, 2**300), st.integers(0, 50),
       st.integers(0, 50))
def test_batched_and_single_draws_interleave(seed, max_int, first, second):
    batched = Prng(seed)
    single = Prng(seed)
    got = batched.integers(max_int, first) + [batched.integer(max_int)]
    got += batched.integers(max_int, second) + [batched.fill_bytes(5)]
    want = [single.integer(max_int) for _ in range(first + 1 + second)] + [single.fill_bytes(5)]
    assert got == want


def test_zero_max_draws_nothing():
    seed = os.urandom(32)
    prng = Prng(seed)
    assert prng.integer(0) == 0
    assert prng.integers(0, 3) == [0, 0, 0]
    assert prng.fill_bytes(4) == _keystream(seed, 4)


def test_long_batches_are_uniform_and_fast():
    order = MaskConfig("Prime", "F32", "B0", "M3").order  # ~7% of 6-byte draws accepted
    values = Prng(os.urandom(32)).integers(order, 200_000)
    assert len(values) == 200_000 and max(values) < order
    mean = sum(values) / len(values) / order
    assert abs(mean - 0.5) < 0.01  # std of the mean is ~0.00065


@pytest.mark.parametrize("seed", [bytes(31), bytes(33), "x" * 32, None])
def test_bad_seed(seed):
    with pytest.raises(MaskingError, match="32 bytes"):
        Prng(seed)


@pytest.mark.parametrize("call", [
    lambda p: p.integer(-1), lambda p: p.integer(1.5), lambda p: p.integers(5, -1),
    lambda p: p.fill_bytes(-2), lambda p: p.integer(True)])
def test_bad_arguments(call):
    with pytest.raises(MaskingError):
        call(Prng(bytes(32)))


# -- rand_chacha 0.3's own ChaCha20Rng tests (rand_chacha/src/chacha.rs) --------------------


def _words(prng: Prng, n: int) -> list[int]:
    return [int.from_bytes(prng.fill_bytes(4), "little") for _ in range(n)]


def test_rand_chacha_true_values_a_and_bytes():
    assert _words(Prng(bytes(32)), 32) == [
        0xade0b876, 0x903df1a0, 0xe56a5d40, 0x28bd8653, 0xb819d2bd, 0x1aed8da0, 0xccef36a8,
        0xc70d778b, 0x7c5941da, 0x8d485751, 0x3fe02477, 0x374ad8b8, 0xf4b8436a, 0x1ca11815,
        0x69b687c3, 0x8665eeb2,
        0xbee7079f, 0x7a385155, 0x7c97ba98, 0x0d082d73, 0xa0290fcb, 0x6965e348, 0x3e53c612,
        0xed7aee32, 0x7621b729, 0x434ee69c, 0xb03371d5, 0xd539d874, 0x281fed31, 0x45fb0a51,
        0x1f0ae1ac, 0x6f4d794b,
    ]
    assert Prng(bytes(32)).fill_bytes(32) == bytes([
        118, 184, 224, 173, 160, 241, 61, 144, 64, 93, 106, 229, 83, 134, 189, 40, 189, 210,
        25, 184, 160, 141, 237, 26, 168, 54, 239, 204, 139, 119, 13, 199])


def test_rand_chacha_true_values_b():
    prng = Prng(bytes(31) + b"\x01")
    _words(prng, 16)
    assert _words(prng, 16) == [
        0x2452eb3a, 0x9249f8ec, 0x8d829d9b, 0xddd4ceb1, 0xe8252083, 0x60818b01, 0xf38422b8,
        0x5aaa49c9, 0xbb00ca8e, 0xda3ba7b4, 0xc4b592d1, 0xfdf2732f, 0x4436274e, 0x2561b3c8,
        0xebdd4aa6, 0xa0136c00,
    ]


def test_rand_chacha_true_values_c_and_word_positions():
    seed = b"\x00\xff" + bytes(30)
    prng = Prng(seed)
    _words(prng, 32)
    assert _words(prng, 16) == [
        0xfb4dd572, 0x4bc42ef1, 0xdf922636, 0x327f1394, 0xa78dea8f, 0x5e269039, 0xa1bebbc1,
        0xcaf09aae, 0xa25ab213, 0x48a6b46c, 0x1b9d9bcb, 0x092c5be6, 0x546ca624, 0x1bec45d5,
        0x87f47473, 0x96f0992e,
    ]
    # rand_chacha: fill_bytes(32) moves the word position by 8, fill_bytes(25) by 7
    prng.fill_bytes(32)
    prng.fill_bytes(25)
    assert _words(prng, 1) == _words(Prng(seed), 64)[48 + 8 + 7 :][:1]


def test_rand_chacha_multiple_blocks_and_construction():
    prng = Prng(bytes(b for i in range(8) for b in (i, 0, 0, 0)))
    got = []
    for _ in range(16):
        got += _words(prng, 1)
        _words(prng, 16)
    assert got == [
        0xf225c81a, 0x6ab1be57, 0x04d42951, 0x70858036, 0x49884684, 0x64efec72, 0x4be2d186,
        0x3615b384, 0x11cfa18e, 0xd3c50049, 0x75c775f6, 0x434c6530, 0x2c5bad8f, 0x898881dc,
        0x5f1c86d9, 0xc1f8e7f4,
    ]
    seed = bytes(b for i in range(4) for b in (i, 0, 0, 0, 0, 0, 0, 0))
    assert _words(Prng(seed), 1) == [137206642]
