"""Envelope round trips, the exact byte layout, encoder validation and Limits."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings

from bbjax.errors import BbjaxError
from bbjax.runtime import DEFAULT_LIMITS, Envelope, Fill, Limits, decode, encode
from bbjax.errors import EnvelopeError, MalformedEnvelope, OversizedEnvelope, UnsupportedVersion

from .strategies import envelopes

GOLDEN_ENVELOPE = Envelope(
    "a", (Fill("s", 0x0102030405060708, b"\xff"),), correlation=5, deadline_ns=1000
)
GOLDEN_HEX = "".join(
    [
        "42424a45",  # magic "BBJE"
        "0100",  # format version 1
        "33000000",  # total length 51
        "0500000000000000",  # correlation 5
        "e803000000000000",  # deadline_ns 1000
        "0100",  # source length 1
        "61",  # source "a"
        "0100",  # fill count 1
        "0100",  # fills[0].site length 1
        "73",  # fills[0].site "s"
        "0807060504030201",  # fills[0].type_hash
        "01000000",  # fills[0].payload length 1
        "ff",  # fills[0].payload
        "b55cf404",  # CRC32 of the 47 bytes above
    ]
)


def test_golden_bytes():
    assert encode(GOLDEN_ENVELOPE).hex() == GOLDEN_HEX
    assert decode(bytes.fromhex(GOLDEN_HEX)) == GOLDEN_ENVELOPE


@settings(max_examples=200, deadline=None)
@given(envelopes())
def test_round_trip(envelope):
    data = encode(envelope)
    assert decode(data) == envelope
    assert decode(bytearray(data)) == envelope
    assert decode(memoryview(data)) == envelope


def test_round_trip_at_the_caps():
    limits = DEFAULT_LIMITS
    fills = tuple(Fill("é" * 128, 2**64 - 1, b"\x00" * 1000) for _ in range(limits.max_fills))
    envelope = Envelope("p" * limits.max_id_bytes, fills, 2**64 - 1, 2**64 - 1)
    assert decode(encode(envelope)) == envelope
    big = Envelope("p", (Fill("s", 0, bytes(range(256)) * 4096),))
    assert decode(encode(big)) == big


def test_encode_accepts_numpy_ints_and_byte_likes():
    envelope = Envelope("p", [Fill("s", np.uint64(7), bytearray(b"ab"))], np.int64(3), np.uint32(4))
    assert decode(encode(envelope)) == Envelope("p", (Fill("s", 7, b"ab"),), 3, 4)


@pytest.mark.parametrize(
    ("envelope", "field"),
    [
        ("not an envelope", "envelope"),
        (Envelope("", ()), "source"),
        (Envelope(b"p", ()), "source"),
        (Envelope("\ud800", ()), "source"),
        (Envelope("p", None), "fills"),
        (Envelope("p", ("x",)), "fills[0]"),
        (Envelope("p", (Fill("", 0, b""),)), "fills[0].site"),
        (Envelope("p", (Fill("s", -1, b""),)), "fills[0].type_hash"),
        (Envelope("p", (Fill("s", 2**64, b""),)), "fills[0].type_hash"),
        (Envelope("p", (Fill("s", True, b""),)), "fills[0].type_hash"),
        (Envelope("p", (Fill("s", 0, "text"),)), "fills[0].payload"),
        (Envelope("p", (), correlation=2**64), "correlation"),
        (Envelope("p", (), correlation=1.0), "correlation"),
        (Envelope("p", (), deadline_ns=-5), "deadline_ns"),
    ],
)
def test_encode_rejects_invalid_fields(envelope, field):
    with pytest.raises(MalformedEnvelope) as info:
        encode(envelope)
    assert info.value.field == field
    assert info.value.offset is None
    assert str(info.value).startswith(field)


ONE_HUNDRED_BYTES = Envelope("p", (Fill("s", 0, bytes(100)),))  # 150 bytes encoded


@pytest.mark.parametrize(
    ("envelope", "limits", "field", "size", "limit"),
    [
        (Envelope("p" * 257, ()), DEFAULT_LIMITS, "source", 257, 256),
        (Envelope("p", (Fill("é" * 129, 0, b""),)), DEFAULT_LIMITS, "fills[0].site", 258, 256),
        (Envelope("p", (Fill("s", 0, b""),) * 65), DEFAULT_LIMITS, "fill_count", 65, 64),
        (ONE_HUNDRED_BYTES, Limits(max_fill_bytes=99), "fills[0].payload", 100, 99),
        (ONE_HUNDRED_BYTES, Limits(max_envelope_bytes=149), "length", 150, 149),
    ],
)
def test_encode_enforces_caps(envelope, limits, field, size, limit):
    with pytest.raises(OversizedEnvelope) as info:
        encode(envelope, limits=limits)
    assert (info.value.field, info.value.size, info.value.limit) == (field, size, limit)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_envelope_bytes": 0},
        {"max_envelope_bytes": 2**32},
        {"max_fills": 2**16},
        {"max_fill_bytes": -1},
        {"max_id_bytes": 0},
        {"max_tensor_rank": 256},
        {"max_fills": 2.0},
        {"max_fills": True},
    ],
)
def test_limits_reject_values_the_format_cannot_hold(kwargs):
    with pytest.raises(EnvelopeError, match=f"Limits.{next(iter(kwargs))}"):
        Limits(**kwargs)


def test_errors_are_bbjax_errors_and_pickle():
    with pytest.raises(UnsupportedVersion) as info:
        decode(b"BBJE\x07\x00")
    error = info.value
    assert isinstance(error, BbjaxError)
    assert (error.version, error.supported, error.field, error.offset) == (7, 1, "version", 4)
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is UnsupportedVersion
    assert str(restored) == str(error)
    assert (restored.version, restored.field, restored.offset) == (7, "version", 4)


def test_fill_repr_summarises_the_payload():
    expected = "Fill(site='s', type_hash=3, payload=<1000000 bytes>)"
    assert repr(Fill("s", 3, bytes(10**6))) == expected
