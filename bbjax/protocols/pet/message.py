"""PET messages in xaynet's wire format (``xaynet_core::message``).

A message is a 136-byte header and a payload::

    0    signature        64  Ed25519 signature of bytes 64..length
    64   participant_pk   32  the sender's Ed25519 public key
    96   coordinator_pk   32  the round's coordinator X25519 key (against forwarding)
    128  length            4  u32 big-endian, the whole message
    132  tag               1  1 Sum, 2 Update, 3 Sum2
    133  flags             1  bit 0: MULTIPART (the payload is a Chunk)
    134  reserved          2  zero
    136  payload

Payloads: Sum = sum_signature (64) | ephm_pk (32); Update = sum_signature | update_signature
| MaskObject | LocalSeedDict; Sum2 = sum_signature | MaskObject; Chunk = id u16 | message_id
u16 | flags u8 (bit 0: LAST_CHUNK) | 3 reserved | data. A LocalSeedDict is a u32 big-endian
length (its own 4 bytes included) and 112-byte entries: sum participant pk (32) | encrypted
mask seed (80), in any order (bbjax writes the mapping's order).

Parsing is total and canonical, stricter than xaynet where xaynet is loose: the length
field must equal the buffer's length, a payload must end where its last field ends, and
unknown flag bits and reserved bytes must be zero (xaynet ignores trailing bytes, which the
signature does not cover, and unknown bits). Whatever bytes xaynet writes parse here.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from bbjax.errors import InvalidArgument, PetCryptoError, PetDecodeError
from bbjax.protocols.pet.crypto import (
    ENCRYPTED_MASK_SEED_LENGTH,
    PUBLIC_KEY_LENGTH,
    SIGNATURE_LENGTH,
    EncryptKeyPair,
    SigningKeyPair,
    check_bytes,
    seal,
    verify,
)
from bbjax.protocols.pet.object import MaskObject

HEADER_LENGTH = 136
CHUNK_HEADER_LENGTH = 8
SEED_DICT_ENTRY_LENGTH = PUBLIC_KEY_LENGTH + ENCRYPTED_MASK_SEED_LENGTH
MULTIPART = 0x01
LAST_CHUNK = 0x01
_U32_MAX = 2**32 - 1


class Tag(enum.IntEnum):
    """The message type byte."""

    SUM = 1
    UPDATE = 2
    SUM2 = 3

    @classmethod
    def is_tag(cls, value: object) -> bool:
        """Whether ``value`` is a tag (a member or its integer)."""
        return isinstance(value, int) and not isinstance(value, bool) and value in (1, 2, 3)


def _signature(value: object, name: str) -> bytes:
    return check_bytes(value, SIGNATURE_LENGTH, name)


def _mask_object(value: object, name: str) -> MaskObject:
    if not isinstance(value, MaskObject):
        raise InvalidArgument(f"{name} must be a MaskObject, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Sum:
    """A sum participant's Sum payload: its ``sum_signature`` and ephemeral X25519 ``ephm_pk``."""

    sum_signature: bytes
    ephm_pk: bytes
    tag: ClassVar[Tag] = Tag.SUM

    def __post_init__(self):
        object.__setattr__(self, "sum_signature", _signature(self.sum_signature, "sum_signature"))
        object.__setattr__(self, "ephm_pk", check_bytes(self.ephm_pk, PUBLIC_KEY_LENGTH, "ephm_pk"))

    def to_bytes(self) -> bytes:
        """The 96-byte payload."""
        return self.sum_signature + self.ephm_pk


@dataclass(frozen=True)
class Update:
    """An update participant's Update payload: both task signatures, its ``masked_model``
    and ``local_seed_dict`` (sum participant pk -> 80-byte encrypted mask seed)."""

    sum_signature: bytes
    update_signature: bytes
    masked_model: MaskObject
    local_seed_dict: Mapping[bytes, bytes]
    tag: ClassVar[Tag] = Tag.UPDATE

    def __post_init__(self):
        object.__setattr__(self, "sum_signature", _signature(self.sum_signature, "sum_signature"))
        object.__setattr__(self, "update_signature",
                           _signature(self.update_signature, "update_signature"))
        _mask_object(self.masked_model, "masked_model")
        if not isinstance(self.local_seed_dict, Mapping):
            raise InvalidArgument(
                f"local_seed_dict must be a mapping, got {type(self.local_seed_dict).__name__}")
        entries = {check_bytes(pk, PUBLIC_KEY_LENGTH, "local_seed_dict key"):
                   check_bytes(seed, ENCRYPTED_MASK_SEED_LENGTH, "local_seed_dict value")
                   for pk, seed in self.local_seed_dict.items()}
        object.__setattr__(self, "local_seed_dict", entries)

    def to_bytes(self) -> bytes:
        """The payload, the seed dict's entries in the mapping's order."""
        entries = b"".join(pk + seed for pk, seed in self.local_seed_dict.items())
        return b"".join((self.sum_signature, self.update_signature, self.masked_model.to_bytes(),
                         struct.pack(">I", 4 + len(entries)), entries))


@dataclass(frozen=True)
class Sum2:
    """A sum participant's Sum2 payload: its ``sum_signature`` and aggregated ``model_mask``."""

    sum_signature: bytes
    model_mask: MaskObject
    tag: ClassVar[Tag] = Tag.SUM2

    def __post_init__(self):
        object.__setattr__(self, "sum_signature", _signature(self.sum_signature, "sum_signature"))
        _mask_object(self.model_mask, "model_mask")

    def to_bytes(self) -> bytes:
        """The payload."""
        return self.sum_signature + self.model_mask.to_bytes()


def _u16(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise InvalidArgument(f"{name} must be an integer in [0, 65535], got {value!r}")
    return value


@dataclass(frozen=True)
class Chunk:
    """One part of a multipart message: chunk ``id``, ``message_id`` (both u16), whether it
    is the ``last`` chunk, and its ``data``."""

    id: int
    message_id: int
    last: bool
    data: bytes

    def __post_init__(self):
        _u16(self.id, "Chunk.id")
        _u16(self.message_id, "Chunk.message_id")
        if not isinstance(self.last, bool):
            raise InvalidArgument(f"Chunk.last must be a bool, got {self.last!r}")
        if not isinstance(self.data, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"Chunk.data must be bytes, got {type(self.data).__name__}")
        object.__setattr__(self, "data", bytes(self.data))

    def to_bytes(self) -> bytes:
        """The 8-byte chunk header and the data."""
        return struct.pack(">HHB3x", self.id, self.message_id, LAST_CHUNK if self.last else 0) + self.data


Payload = Sum | Update | Sum2 | Chunk
_PAYLOADS = (Sum, Update, Sum2, Chunk)


@dataclass(frozen=True)
class Message:
    """A PET message: header fields and a payload.

    ``tag`` follows from a Sum / Update / Sum2 payload; a Chunk payload (``is_multipart``
    true, and only then) needs it given. ``signature`` is ``None`` until signed; a parsed
    message carries the signature it came with (unverified).
    """

    participant_pk: bytes
    coordinator_pk: bytes
    payload: Payload
    is_multipart: bool = False
    signature: bytes | None = None
    tag: Tag | None = None

    def __post_init__(self):
        object.__setattr__(self, "participant_pk",
                           check_bytes(self.participant_pk, PUBLIC_KEY_LENGTH, "participant_pk"))
        object.__setattr__(self, "coordinator_pk",
                           check_bytes(self.coordinator_pk, PUBLIC_KEY_LENGTH, "coordinator_pk"))
        if not isinstance(self.payload, _PAYLOADS):
            raise InvalidArgument(
                f"payload must be a Sum, Update, Sum2 or Chunk, got {type(self.payload).__name__}")
        if self.is_multipart is not isinstance(self.payload, Chunk):
            raise InvalidArgument("is_multipart must be True exactly when the payload is a Chunk")
        if self.signature is not None:
            object.__setattr__(self, "signature", _signature(self.signature, "signature"))
        if isinstance(self.payload, Chunk):
            if self.tag is None:
                raise InvalidArgument("a multipart message needs the tag of the message it carries")
            if not Tag.is_tag(self.tag):
                raise InvalidArgument(f"tag must be a Tag, got {self.tag!r}")
            object.__setattr__(self, "tag", Tag(self.tag))
        elif self.tag is not None and self.tag != self.payload.tag:
            raise InvalidArgument(f"tag {self.tag!r} does not match a {type(self.payload).__name__} payload")
        else:
            object.__setattr__(self, "tag", self.payload.tag)

    def to_bytes(self, signing_keys: SigningKeyPair | None = None) -> bytes:
        """The wire bytes. The message's own ``signature`` is used when it has one, else
        ``signing_keys`` (the participant's, :class:`PetCryptoError` otherwise) sign it."""
        payload = self.payload.to_bytes()
        length = HEADER_LENGTH + len(payload)
        if length > _U32_MAX:
            raise InvalidArgument(f"a message of {length} bytes does not fit the u32 length field")
        signed = b"".join((
            self.participant_pk, self.coordinator_pk,
            struct.pack(">IBB2x", length, self.tag, MULTIPART if self.is_multipart else 0),
            payload,
        ))
        signature = self.signature
        if signature is None:
            if not isinstance(signing_keys, SigningKeyPair):
                raise InvalidArgument("an unsigned message needs signing_keys (a SigningKeyPair)")
            if signing_keys.public != self.participant_pk:
                raise PetCryptoError("signing_keys are not the keys of the message's participant_pk")
            signature = signing_keys.sign(signed)
        return signature + signed


def _need(data: bytes, offset: int, size: int, what: str) -> None:
    if len(data) - offset < size:
        raise PetDecodeError(f"{what}: needs {size} bytes at offset {offset}, "
                             f"only {max(len(data) - offset, 0)} left")


def _end(data: bytes, offset: int, what: str) -> None:
    if offset != len(data):
        raise PetDecodeError(f"{what}: {len(data) - offset} trailing bytes")


def _mask_at(data: bytes, offset: int, what: str) -> tuple[MaskObject, int]:
    try:
        obj, consumed = MaskObject.parse(data, offset)
    except PetDecodeError as e:
        raise PetDecodeError(f"{what}: {e}") from None
    return obj, offset + consumed


def _seed_dict_at(data: bytes, offset: int) -> tuple[dict[bytes, bytes], int]:
    _need(data, offset, 4, "local seed dict length")
    (length,) = struct.unpack_from(">I", data, offset)
    if length < 4 or (length - 4) % SEED_DICT_ENTRY_LENGTH:
        raise PetDecodeError(f"local seed dict length {length} is not 4 + k * {SEED_DICT_ENTRY_LENGTH}")
    _need(data, offset, length, "local seed dict")
    entries: dict[bytes, bytes] = {}
    for start in range(offset + 4, offset + length, SEED_DICT_ENTRY_LENGTH):
        pk = data[start:start + PUBLIC_KEY_LENGTH]
        if pk in entries:
            raise PetDecodeError(f"local seed dict: duplicated key {pk.hex()}")
        entries[pk] = data[start + PUBLIC_KEY_LENGTH:start + SEED_DICT_ENTRY_LENGTH]
    return entries, offset + length


def _parse_sum(data: bytes) -> Sum:
    _need(data, 0, SIGNATURE_LENGTH + PUBLIC_KEY_LENGTH, "Sum payload")
    _end(data, SIGNATURE_LENGTH + PUBLIC_KEY_LENGTH, "Sum payload")
    return Sum(data[:SIGNATURE_LENGTH], data[SIGNATURE_LENGTH:])


def _parse_update(data: bytes) -> Update:
    _need(data, 0, 2 * SIGNATURE_LENGTH, "Update payload signatures")
    masked_model, offset = _mask_at(data, 2 * SIGNATURE_LENGTH, "Update masked model")
    seed_dict, offset = _seed_dict_at(data, offset)
    _end(data, offset, "Update payload")
    return Update(data[:SIGNATURE_LENGTH], data[SIGNATURE_LENGTH:2 * SIGNATURE_LENGTH],
                  masked_model, seed_dict)


def _parse_sum2(data: bytes) -> Sum2:
    _need(data, 0, SIGNATURE_LENGTH, "Sum2 payload signature")
    model_mask, offset = _mask_at(data, SIGNATURE_LENGTH, "Sum2 model mask")
    _end(data, offset, "Sum2 payload")
    return Sum2(data[:SIGNATURE_LENGTH], model_mask)


def _parse_chunk(data: bytes) -> Chunk:
    _need(data, 0, CHUNK_HEADER_LENGTH, "Chunk header")
    chunk_id, message_id, flags = struct.unpack_from(">HHB", data)
    if flags & ~LAST_CHUNK:
        raise PetDecodeError(f"Chunk flags {flags:#04x} set unknown bits")
    if data[5:8] != b"\x00\x00\x00":
        raise PetDecodeError("Chunk reserved bytes are not zero")
    return Chunk(chunk_id, message_id, bool(flags & LAST_CHUNK), data[CHUNK_HEADER_LENGTH:])


_PARSERS = {Tag.SUM: _parse_sum, Tag.UPDATE: _parse_update, Tag.SUM2: _parse_sum2}


def parse_payload(tag: Tag, data: bytes) -> Sum | Update | Sum2:
    """The Sum / Update / Sum2 payload (by ``tag``) that is exactly ``data``; anything else
    raises :class:`PetDecodeError`."""
    if not Tag.is_tag(tag):
        raise InvalidArgument(f"tag must be a Tag, got {tag!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PetDecodeError(f"a payload must be bytes, got {type(data).__name__}")
    return _PARSERS[Tag(tag)](bytes(data))


def _header(data: object) -> tuple[bytes, int]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PetDecodeError(f"a message must be bytes, got {type(data).__name__}")
    data = bytes(data)
    _need(data, 0, HEADER_LENGTH, "message header")
    (length,) = struct.unpack_from(">I", data, 128)
    if length != len(data):
        raise PetDecodeError(f"message length field says {length}, the buffer is {len(data)} bytes")
    return data, length


def parse_message(data: bytes) -> Message:
    """The message that is exactly ``data`` (signature not verified: see
    :func:`verify_message_signature`). Anything malformed raises :class:`PetDecodeError`."""
    data, _ = _header(data)
    tag_byte, flags = data[132], data[133]
    if not Tag.is_tag(tag_byte):
        raise PetDecodeError(f"unknown message tag {tag_byte}")
    if flags & ~MULTIPART:
        raise PetDecodeError(f"message flags {flags:#04x} set unknown bits")
    if data[134:136] != b"\x00\x00":
        raise PetDecodeError("message reserved bytes are not zero")
    tag = Tag(tag_byte)
    body = data[HEADER_LENGTH:]
    multipart = bool(flags & MULTIPART)
    payload = _parse_chunk(body) if multipart else _PARSERS[tag](body)
    return Message(data[64:96], data[96:128], payload, is_multipart=multipart,
                   signature=data[:64], tag=tag)


def verify_message_signature(data: bytes) -> bool:
    """Whether the message's signature is its participant_pk's signature of bytes
    64..length; bytes that hold no message header raise :class:`PetDecodeError`."""
    data, length = _header(data)
    return verify(data[64:96], data[SIGNATURE_LENGTH:length], data[:SIGNATURE_LENGTH])


def seal_message(data: bytes, coordinator_pk: bytes) -> bytes:
    """Message bytes in a sealed box to the round's coordinator key (``SEALBYTES`` longer)."""
    return seal(coordinator_pk, data)


def open_message(ciphertext: bytes, coordinator_keys: EncryptKeyPair) -> bytes:
    """The message bytes in a sealed box to ``coordinator_keys``; :class:`PetCryptoError`
    if it does not open."""
    return coordinator_keys.open(ciphertext)

