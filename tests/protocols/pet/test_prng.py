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
