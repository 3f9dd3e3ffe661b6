"""Every error path of :func:`decode`: the type raised, the field named and its offset."""

from __future__ import annotations

import struct

import pytest

from bbjax.runtime import Envelope, Fill, Limits, decode, encode

from bbjax.errors import EnvelopeError, MalformedEnvelope, OversizedEnvelope, TruncatedEnvelope, UnsupportedVersion

from .strategies import WIDE_LIMITS, reseal

ENVELOPE = Envelope("peer-1", (Fill("site", 11, b"abc"), Fill("é", 2**64 - 1, b"")), 42, 10**9)
VALID = encode(ENVELOPE)
# offsets in VALID: header 0..10, correlation 10, deadline 18, source.length 26, source 28,
# fill_count 34, fills[0].site.length 36, site 38, type_hash 42, payload.length 50, payload 54,
# fills[1].site.length 57, site 59, type_hash 61, payload.length 69, checksum 73


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    """``data`` with ``value`` packed at ``offset``, resealed."""
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return reseal(out)


def raises(
    error: type[EnvelopeError], data: bytes, field: str, offset: int, **kwargs
) -> EnvelopeError:
    with pytest.raises(error) as info:
        decode(data, **kwargs)
    assert (info.value.field, info.value.offset) == (field, offset)
    assert str(info.value).startswith(f"{field} at offset {offset}: ")
    return info.value


def test_the_offsets_in_the_comment_are_right():
    assert VALID[28:34] == b"peer-1" and VALID[38:42] == b"site" and len(VALID) == 77


def test_every_prefix_is_truncated():
    for size in range(len(VALID)):
        with pytest.raises(TruncatedEnvelope):
            decode(VALID[:size])


def test_every_single_bit_flip_is_detected():
    for index in range(len(VALID)):
        for bit in range(8):
            corrupted = bytearray(VALID)
            corrupted[index] ^= 1 << bit
            with pytest.raises(EnvelopeError):
                decode(bytes(corrupted))


def test_header_errors():
    raises(TruncatedEnvelope, b"", "magic", 0)
    raises(TruncatedEnvelope, b"BBJ", "magic", 0)
    raises(MalformedEnvelope, b"BBX", "magic", 0)
    raises(MalformedEnvelope, b"PK\x03\x04" + VALID[4:], "magic", 0)
    raises(TruncatedEnvelope, b"BBJE\x01", "version", 4)
    raises(TruncatedEnvelope, b"BBJE\x01\x00\x4d", "length", 6)
    raises(TruncatedEnvelope, VALID[:-1], "length", 6)
    raises(MalformedEnvelope, VALID + b"\x00", "data", len(VALID))
    raises(MalformedEnvelope, VALID[:6] + struct.pack("<I", 33) + VALID[10:], "length", 6)


@pytest.mark.parametrize("version", [0, 2, 0xFFFF])
def test_other_versions_are_unsupported(version):
    data = VALID[:4] + struct.pack("<H", version) + VALID[6:]
    error = raises(UnsupportedVersion, data, "version", 4)
    assert error.version == version
    assert raises(UnsupportedVersion, data[:6], "version", 4).version == version


def test_checksum_mismatch():
    corrupted = VALID[:-1] + bytes([VALID[-1] ^ 0xFF])
    raises(MalformedEnvelope, corrupted, "checksum", len(VALID) - 4)
    payload_flip = bytearray(VALID)
    payload_flip[54] ^= 0x20
    raises(MalformedEnvelope, bytes(payload_flip), "checksum", len(VALID) - 4)


@pytest.mark.parametrize(
    ("limits", "field", "offset", "size"),
    [
        (Limits(max_envelope_bytes=76), "length", 6, 77),
        (Limits(max_id_bytes=5), "source.length", 26, 6),
        (Limits(max_id_bytes=5, max_envelope_bytes=77), "source.length", 26, 6),
        (Limits(max_fills=1), "fill_count", 34, 2),
        (Limits(max_fill_bytes=2), "fills[0].payload.length", 50, 3),
    ],
)
def test_each_cap_is_enforced_on_decode(limits, field, offset, size):
    error = raises(OversizedEnvelope, VALID, field, offset, limits=limits)
    assert error.size == size


def test_site_over_the_id_cap():
    envelope = Envelope("p", (Fill("s" * 300, 0, b""),))
    data = encode(envelope, limits=Limits(max_id_bytes=300))
    error = raises(OversizedEnvelope, data, "fills[0].site.length", 31)
    assert (error.size, error.limit) == (300, 256)


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "field", "at"),
    [
        (26, "<H", 0, "source.length", 26),  # empty source
        (36, "<H", 0, "fills[0].site.length", 36),  # empty site
        (26, "<H", 200, "source", 28),  # runs past the checksum
        (34, "<H", 3, "fills[2].site.length", 73),  # a fill count the bytes do not hold
        (34, "<H", 1, "checksum", 57),  # fewer fills than the bytes hold
        (50, "<I", 2**32 - 1, "fills[0].payload", 54),  # length far past the end
        (50, "<I", 2, "fills[1].site", 58),  # a shorter payload misaligns what follows
        (28, "<B", 0xFF, "source", 28),  # invalid UTF-8
        (59, "<B", 0xA9, "fills[1].site", 59),  # a stray continuation byte
    ],
)
def test_inconsistent_fields_are_malformed(offset, fmt, value, field, at):
    data = patched(VALID, offset, fmt, value)
    raises(MalformedEnvelope, data, field, at, limits=WIDE_LIMITS)


def test_non_bytes_inputs_are_malformed():
    for data in ["BBJE", None, 12, [66, 66]]:
        raises(MalformedEnvelope, data, "data", 0)
    released = memoryview(VALID)
    released.release()
    raises(MalformedEnvelope, released, "data", 0)
