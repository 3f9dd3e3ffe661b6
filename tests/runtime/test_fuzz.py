"""Fuzzing the decoders: random and mutated bytes raise only the codec's errors, anything
accepted re-encodes to the same bytes, and decoding allocates no more than the input."""

from __future__ import annotations

import struct
import time
import tracemalloc

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbjax.runtime import Envelope, Fill, Limits, decode, decode_tensor, encode, encode_tensor
from bbjax.runtime.envelope import MAGIC

from bbjax.errors import EnvelopeError, MalformedEnvelope, OversizedEnvelope, TensorDecodeError, TruncatedEnvelope

from .strategies import WIDE_LIMITS, arrays, envelopes, mutations, reseal

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADER = MAGIC + b"\x01\x00"


def decode_or_none(data: bytes, limits: Limits = Limits()) -> Envelope | None:
    """The decoded envelope or None when the codec refused; any other exception propagates.
    Accepted bytes must be canonical: they re-encode to themselves."""
    try:
        envelope = decode(data, limits=limits)
    except EnvelopeError:
        return None
    assert encode(envelope, limits=limits) == data
    return envelope


def decode_tensor_or_none(data: bytes, limits: Limits = Limits()) -> np.ndarray | None:
    try:
        array = decode_tensor(data, limits=limits)
    except TensorDecodeError:
        return None
    assert encode_tensor(array, limits=limits) == data
    return array


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes(data):
    decode_or_none(data)
    decode_or_none(HEADER + data)
    decode_or_none(reseal(HEADER + bytes(4) + data))
    decode_or_none(reseal(HEADER + bytes(4) + data), WIDE_LIMITS)


@FUZZ
@given(st.data(), envelopes(max_fills=4))
def test_mutated_envelopes(data, envelope):
    mutated = data.draw(mutations(encode(envelope)))
    decode_or_none(mutated)
    decode_or_none(mutated, WIDE_LIMITS)


def length_fields(data: bytes) -> list[tuple[int, int]]:
    """(offset, width) of every length or count field of the valid envelope ``data``."""
    fields = [(6, 4), (26, 2)]
    at = 28 + struct.unpack_from("<H", data, 26)[0]
    fields.append((at, 2))
    at += 2
    for _ in range(struct.unpack_from("<H", data, at - 2)[0]):
        fields.append((at, 2))
        at += 2 + struct.unpack_from("<H", data, at)[0] + 8
        fields.append((at, 4))
        at += 4 + struct.unpack_from("<I", data, at)[0]
    assert at == len(data) - 4  # the walk ended at the checksum
    return fields


@settings(max_examples=100, deadline=None)
@given(envelopes(max_fills=4), st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4))
def test_corrupted_length_fields(envelope, values):
    valid = encode(envelope)
    for at, width in length_fields(valid):
        for value in [0, 1, 2 ** (8 * width) - 1, *(v % 2 ** (8 * width) for v in values)]:
            corrupted = bytearray(valid)
            corrupted[at : at + width] = value.to_bytes(width, "little")
            for candidate in (bytes(corrupted), reseal(corrupted)):
                decode_or_none(candidate)
                decode_or_none(candidate, WIDE_LIMITS)


@FUZZ
@given(st.binary(max_size=256))
def test_random_tensor_bytes(data):
    decode_tensor_or_none(data)
    decode_tensor_or_none(data, WIDE_LIMITS)


@FUZZ
@given(st.data(), arrays())
def test_mutated_tensors(data, array):
    mutated = data.draw(mutations(encode_tensor(array), resealed=False))
    decode_tensor_or_none(mutated)
    decode_tensor_or_none(mutated, WIDE_LIMITS)


def peak_allocation(function, *args, **kwargs) -> int:
    """Peak bytes allocated while ``function`` runs, whether it returns or raises."""
    tracemalloc.start()
    try:
        function(*args, **kwargs)
    except EnvelopeError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_huge_claims_fail_fast_without_allocating():
    header_claim = HEADER + struct.pack("<I", 2**32 - 1)
    payload_claim = bytearray(encode(Envelope("p", (Fill("s", 0, b"x"),))))
    struct.pack_into("<I", payload_claim, 42, 2**32 - 1)
    payload_claim = reseal(payload_claim)
    shape_claim = b"\x0b\x08" + struct.pack("<8Q", *[2**63] * 8)
    length_claim = b"\x0b\x01" + struct.pack("<Q", 2**29) + bytes(8)  # 4 GiB declared, 8 given
    cases = [
        (decode, header_claim, Limits(), OversizedEnvelope),
        (decode, header_claim, WIDE_LIMITS, TruncatedEnvelope),
        (decode, payload_claim, Limits(), OversizedEnvelope),
        (decode, payload_claim, WIDE_LIMITS, MalformedEnvelope),
        (decode_tensor, shape_claim, WIDE_LIMITS, TensorDecodeError),
        (decode_tensor, length_claim, WIDE_LIMITS, TensorDecodeError),
    ]
    for function, data, limits, error in cases:
        start = time.perf_counter()
        try:
            function(data, limits=limits)
        except error:
            pass
        else:
            raise AssertionError(f"{function.__name__}({data!r}) did not raise {error.__name__}")
        assert time.perf_counter() - start < 0.5
        assert peak_allocation(function, data, limits=limits) < 16 * 1024


@settings(max_examples=100, deadline=None)
@given(st.data(), envelopes(max_fills=4))
def test_decode_allocates_at_most_about_the_input(data, envelope):
    mutated = data.draw(mutations(encode(envelope)))
    peak = peak_allocation(decode, mutated, limits=WIDE_LIMITS)
    assert peak <= 2 * len(mutated) + 64 * 1024
