"""The wire envelope: the one versioned binary format nodes send each other.

An :class:`Envelope` carries a source peer id, the fills for the destination's input
sites, a correlation id and the remaining deadline. The byte layout is in
``docs/envelope.md``. :func:`decode` is total: for any input it returns an
:class:`Envelope` or raises an :class:`~bbjax.errors.EnvelopeError`, and it checks
every declared length against :class:`Limits` before it copies anything.
"""

from __future__ import annotations

import numbers
import struct
import zlib
from dataclasses import dataclass

from bbjax.errors import (
    EnvelopeError,
    MalformedEnvelope,
    OversizedEnvelope,
    TruncatedEnvelope,
    UnsupportedVersion,
)

MAGIC = b"BBJE"
FORMAT_VERSION = 1

_HEADER = struct.Struct("<4sHI")  # magic, version, total length
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_CHECKSUM_SIZE = 4
# the smallest envelope: header, correlation, deadline, a 1-byte source, no fills, checksum
_MIN_LENGTH = _HEADER.size + 8 + 8 + 2 + 1 + 2 + _CHECKSUM_SIZE

_MiB = 1 << 20


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class Limits:
    """Caps enforced at the wire boundary, by encoding and decoding alike.

    ``max_envelope_bytes``: a whole encoded envelope. ``max_fills``: fills per envelope.
    ``max_fill_bytes``: one fill's payload (also one encoded tensor). ``max_id_bytes``: the
    UTF-8 bytes of the source peer id and of each site. ``max_tensor_rank``: dims of a
    tensor. Each must be an integer from 1 (0 for the rank) up to what its length field
    can hold.
    """

    max_envelope_bytes: int = 16 * _MiB
    max_fills: int = 64
    max_fill_bytes: int = 16 * _MiB
    max_id_bytes: int = 256
    max_tensor_rank: int = 8

    def __post_init__(self) -> None:
        for name, low, high in (
            ("max_envelope_bytes", 1, 2**32 - 1),
            ("max_fills", 1, 2**16 - 1),
            ("max_fill_bytes", 1, 2**32 - 1),
            ("max_id_bytes", 1, 2**16 - 1),
            ("max_tensor_rank", 0, 255),
        ):
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= high:
                raise EnvelopeError(
                    f"must be an integer in [{low}, {high}], got {value!r}",
                    field=f"Limits.{name}",
                )


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Fill:
    """One value for one input site of the destination node.

    ``type_hash`` (a u64) names the payload's type so the receiver can check it before
    decoding, e.g. :func:`~bbjax.runtime.type_hash` for a tensor.
    """

    site: str
    type_hash: int
    payload: bytes

    def __repr__(self) -> str:
        payload = self.payload
        sized = isinstance(payload, bytes | bytearray)
        shown = f"<{len(payload)} bytes>" if sized else repr(payload)
        return f"Fill(site={self.site!r}, type_hash={self.type_hash!r}, payload={shown})"


@dataclass(frozen=True)
class Envelope:
    """What one peer sends another in one message.

    ``source``: the sender's peer id. ``fills``: values for the destination's input sites.
    ``correlation``: a u64 tying a response to its request (0: none). ``deadline_ns``: the
    remaining time budget in nanoseconds, a u64 (0: no deadline).
    """

    source: str
    fills: tuple[Fill, ...]
    correlation: int = 0
    deadline_ns: int = 0


def encode(envelope: Envelope, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The wire bytes of ``envelope``.

    Raises :class:`MalformedEnvelope` for a field of the wrong type or range (ids must be
    non-empty valid UTF-8, integers u64) and :class:`OversizedEnvelope` when a cap in
    ``limits`` is exceeded.
    """
    if not isinstance(envelope, Envelope):
        raise MalformedEnvelope(
            f"expected an Envelope, got {type(envelope).__name__}", field="envelope"
        )
    correlation = _check_u64(envelope.correlation, "correlation")
    deadline_ns = _check_u64(envelope.deadline_ns, "deadline_ns")
    source = _check_id(envelope.source, "source", limits)
    fills = envelope.fills
    if not isinstance(fills, tuple | list):
        raise MalformedEnvelope(
            f"expected a tuple of Fill, got {type(fills).__name__}", field="fills"
        )
    if len(fills) > limits.max_fills:
        raise _oversized("max_fills", len(fills), limits, "fill_count")
    parts = [_U64.pack(correlation), _U64.pack(deadline_ns), _U16.pack(len(source)), source]
    parts.append(_U16.pack(len(fills)))
    for i, fill in enumerate(fills):
        if not isinstance(fill, Fill):
            raise MalformedEnvelope(
                f"expected a Fill, got {type(fill).__name__}", field=f"fills[{i}]"
            )
        site = _check_id(fill.site, f"fills[{i}].site", limits)
        type_hash = _check_u64(fill.type_hash, f"fills[{i}].type_hash")
        payload = _check_payload(fill.payload, f"fills[{i}].payload", limits)
        parts += [_U16.pack(len(site)), site, _U64.pack(type_hash)]
        parts += [_U32.pack(len(payload)), payload]
    length = _HEADER.size + sum(len(part) for part in parts) + _CHECKSUM_SIZE
    if length > limits.max_envelope_bytes:
        raise _oversized("max_envelope_bytes", length, limits, "length")
    body = b"".join([_HEADER.pack(MAGIC, FORMAT_VERSION, length), *parts])
    return body + _U32.pack(zlib.crc32(body))


def decode(
    data: bytes | bytearray | memoryview, *, limits: Limits = DEFAULT_LIMITS
) -> Envelope:
    """The :class:`Envelope` in ``data`` (any C-contiguous bytes-like object).

    Raises :class:`TruncatedEnvelope` if ``data`` ends early, :class:`UnsupportedVersion`
    for another format version, :class:`OversizedEnvelope` when a declared size exceeds a
    cap in ``limits``, and :class:`MalformedEnvelope` for anything else that is not a valid
    envelope, a checksum mismatch included. Nothing else escapes, whatever ``data`` holds.
    """
    view = byte_view(data, MalformedEnvelope)
    length = _check_header(view, limits)
    checksum_at = length - _CHECKSUM_SIZE
    stored = _U32.unpack_from(view, checksum_at)[0]
    computed = zlib.crc32(view[:checksum_at])
    if stored != computed:
        raise MalformedEnvelope(
            f"stored CRC32 {stored:#010x} != {computed:#010x} computed over [0, {checksum_at})",
            field="checksum",
            offset=checksum_at,
        )
    reader = _Reader(view, _HEADER.size, checksum_at)
    correlation = reader.uint(_U64, "correlation")
    deadline_ns = reader.uint(_U64, "deadline_ns")
    source = reader.text("source", limits)
    count_at = reader.pos
    count = reader.uint(_U16, "fill_count")
    if count > limits.max_fills:
        raise _oversized("max_fills", count, limits, "fill_count", count_at)
    fills = tuple(reader.fill(i, limits) for i in range(count))
    if reader.pos != checksum_at:
        raise MalformedEnvelope(
            f"{checksum_at - reader.pos} bytes left after the last fill",
            field="checksum",
            offset=reader.pos,
        )
    return Envelope(source, fills, correlation, deadline_ns)


def byte_view(data: object, error: type[EnvelopeError]) -> memoryview:
    """``data`` as a flat byte view; ``error`` unless it is a readable bytes-like object."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise error(f"expected bytes, got {type(data).__name__}", field="data", offset=0)
    try:
        return memoryview(data).cast("B")
    except (TypeError, ValueError) as cause:  # not C-contiguous, or released
        raise error(f"unreadable buffer: {cause}", field="data", offset=0) from None


def _check_header(view: memoryview, limits: Limits) -> int:
    """The total length declared by the header, checked against ``limits`` and the input."""
    size = len(view)
    magic = bytes(view[: len(MAGIC)])
    if magic != MAGIC[: len(magic)]:
        raise MalformedEnvelope(
            f"expected magic {MAGIC!r}, got {magic!r}", field="magic", offset=0
        )
    _require(size, "magic", 0, 4)
    _require(size, "version", 4, 6)
    version = _U16.unpack_from(view, 4)[0]
    if version != FORMAT_VERSION:
        raise UnsupportedVersion(version, supported=FORMAT_VERSION, offset=4)
    _require(size, "length", 6, _HEADER.size)
    length = _U32.unpack_from(view, 6)[0]
    if length > limits.max_envelope_bytes:
        raise _oversized("max_envelope_bytes", length, limits, "length", 6)
    if length < _MIN_LENGTH:
        raise MalformedEnvelope(
            f"declares {length} bytes, below the minimum of {_MIN_LENGTH}",
            field="length",
            offset=6,
        )
    if size < length:
        raise TruncatedEnvelope(
            f"declares {length} bytes but the input has {size}", field="length", offset=6
        )
    if size > length:
        raise MalformedEnvelope(
            f"{size - length} bytes after the declared end", field="data", offset=length
        )
    return length


def _require(size: int, field: str, start: int, end: int) -> None:
    if size < end:
        raise TruncatedEnvelope(
            f"the input ends after {size} bytes, inside this field", field=field, offset=start
        )


def _oversized(
    cap: str, size: int, limits: Limits, field: str, offset: int | None = None
) -> OversizedEnvelope:
    limit = getattr(limits, cap)
    return OversizedEnvelope(
        f"{size} exceeds Limits.{cap} = {limit}",
        size=size,
        limit=limit,
        field=field,
        offset=offset,
    )


class _Reader:
    """Bounds-checked little-endian reads of ``view[pos:end]``; an overrun is malformed."""

    def __init__(self, view: memoryview, pos: int, end: int):
        self.view = view
        self.pos = pos
        self.end = end

    def take(self, size: int, field: str) -> memoryview:
        if size > self.end - self.pos:
            raise MalformedEnvelope(
                f"needs {size} bytes but {self.end - self.pos} remain before the checksum",
                field=field,
                offset=self.pos,
            )
        self.pos += size
        return self.view[self.pos - size : self.pos]

    def uint(self, fmt: struct.Struct, field: str) -> int:
        return fmt.unpack(self.take(fmt.size, field))[0]

    def text(self, field: str, limits: Limits) -> str:
        """A length-prefixed, non-empty UTF-8 id."""
        length_at = self.pos
        size = self.uint(_U16, f"{field}.length")
        if size == 0:
            raise MalformedEnvelope("must not be 0", field=f"{field}.length", offset=length_at)
        if size > limits.max_id_bytes:
            raise _oversized("max_id_bytes", size, limits, f"{field}.length", length_at)
        raw = self.take(size, field)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as error:
            raise MalformedEnvelope(
                f"invalid UTF-8 at byte {error.start}", field=field, offset=length_at + 2
            ) from None

    def fill(self, index: int, limits: Limits) -> Fill:
        field = f"fills[{index}]"
        site = self.text(f"{field}.site", limits)
        type_hash = self.uint(_U64, f"{field}.type_hash")
        length_at = self.pos
        size = self.uint(_U32, f"{field}.payload.length")
        if size > limits.max_fill_bytes:
            raise _oversized("max_fill_bytes", size, limits, f"{field}.payload.length", length_at)
        return Fill(site, type_hash, bytes(self.take(size, f"{field}.payload")))


def _check_u64(value: object, field: str) -> int:
    if not _is_int(value) or not 0 <= value < 2**64:
        raise MalformedEnvelope(f"must be an integer in [0, 2**64), got {value!r}", field=field)
    return int(value)


def _check_id(value: object, field: str, limits: Limits) -> bytes:
    if not isinstance(value, str) or not value:
        raise MalformedEnvelope(f"must be a non-empty str, got {value!r}", field=field)
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise MalformedEnvelope(f"not encodable as UTF-8: {error.reason}", field=field) from None
    if len(raw) > limits.max_id_bytes:
        raise _oversized("max_id_bytes", len(raw), limits, field)
    return raw


def _check_payload(value: object, field: str, limits: Limits) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise MalformedEnvelope(f"must be bytes, got {type(value).__name__}", field=field)
    raw = bytes(value)
    if len(raw) > limits.max_fill_bytes:
        raise _oversized("max_fill_bytes", len(raw), limits, field)
    return raw
