"""Multipart PET messages: the participant's encoder (xaynet-sdk ``MessageEncoder``) and the
coordinator's reassembler (xaynet-server ``MultipartHandler``).

A payload longer than the room a message leaves under ``max_message_size`` (less the
header and the sealed box's 48 bytes) is split in chunks of that room less the 8-byte chunk
header; each chunk travels as its own signed message with the MULTIPART flag, all under one
message id (random, a u16), the last one flagged LAST_CHUNK.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass, field

from bbjax.errors import ConfigError, InvalidArgument, MultipartError, PetDecodeError
from bbjax.protocols.pet.crypto import PUBLIC_KEY_LENGTH, SEALBYTES, SigningKeyPair
from bbjax.protocols.pet.message import (
    CHUNK_HEADER_LENGTH,
    HEADER_LENGTH,
    Chunk,
    Message,
    Sum,
    Sum2,
    Tag,
    Update,
    parse_payload,
)

MIN_MESSAGE_SIZE = HEADER_LENGTH + SEALBYTES + 1
"""xaynet's smallest ``max_message_size`` setting (185)."""
DEFAULT_MAX_MESSAGE_SIZE = 4096 - HEADER_LENGTH - SEALBYTES
"""xaynet's default ``max_message_size`` (3912)."""
MAX_CHUNKS = 2**16


def _max_payload_size(max_message_size: int | None) -> int | None:
    if max_message_size is None:
        return None
    if isinstance(max_message_size, bool) or not isinstance(max_message_size, int):
        raise ConfigError(f"max_message_size must be an integer or None, got {max_message_size!r}",
                          field="max_message_size")
    room = max_message_size - HEADER_LENGTH - SEALBYTES
    # xaynet's encoder refuses a payload size <= CHUNK_HEADER_LENGTH + 1 (its SDK then panics)
    if max_message_size < MIN_MESSAGE_SIZE or room <= CHUNK_HEADER_LENGTH + 1:
        smallest = HEADER_LENGTH + SEALBYTES + CHUNK_HEADER_LENGTH + 2
        raise ConfigError(f"max_message_size must be at least {smallest}, got {max_message_size}",
                          field="max_message_size")
    return room


def encode_messages(payload: Sum | Update | Sum2, keys: SigningKeyPair, coordinator_pk: bytes,
                    max_message_size: int | None, *, message_id: int | None = None) -> list[bytes]:
    """The signed message(s) that carry ``payload`` from ``keys``' participant (unsealed:
    seal each with :func:`~bbjax.protocols.pet.message.seal_message`).

    One message when the payload fits ``max_message_size - 136 - 48`` bytes (or
    ``max_message_size`` is None: unlimited), else multipart chunks, as xaynet's
    MessageEncoder; ``message_id`` defaults to a random u16. A ``max_message_size`` below
    194 raises :class:`~bbjax.errors.ConfigError`.
    """
    if not isinstance(payload, (Sum, Update, Sum2)):
        raise InvalidArgument(f"only Sum, Update and Sum2 payloads are encoded, got "
                              f"{type(payload).__name__}")
    if not isinstance(keys, SigningKeyPair):
        raise InvalidArgument(f"keys must be a SigningKeyPair, got {type(keys).__name__}")
    room = _max_payload_size(max_message_size)
    data = payload.to_bytes()
    if room is None or len(data) <= room:
        return [Message(keys.public, coordinator_pk, payload).to_bytes(keys)]
    size = room - CHUNK_HEADER_LENGTH
    count = -(-len(data) // size)
    if count > MAX_CHUNKS:
        raise InvalidArgument(f"the payload needs {count} chunks at max_message_size "
                              f"{max_message_size}; chunk ids stop at {MAX_CHUNKS}")
    if message_id is None:
        message_id = secrets.randbelow(2**16)
    return [
        Message(keys.public, coordinator_pk,
                Chunk(i, message_id, i == count - 1, data[i * size:(i + 1) * size]),
                is_multipart=True, tag=payload.tag).to_bytes(keys)
        for i in range(count)
    ]


@dataclass
class _Partial:
    tag: Tag
    coordinator_pk: bytes
    last_id: int | None = None
    chunks: dict[int, bytes] = field(default_factory=dict)


def _cost(data: bytes) -> int:
    return CHUNK_HEADER_LENGTH + len(data)


def _check_bound(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"Reassembler {name} must be a non-negative integer, got {value!r}")
    return value


class Reassembler:
    """Buffers multipart chunks per (participant_pk, message_id) until a message is whole.

    At most ``max_messages`` messages are pending at once, holding at most ``max_bytes``
    (each chunk counted as its data plus its 8-byte header). A message is whole when its
    LAST_CHUNK and every id below it have arrived; its payload (parsed by the chunks' tag)
    then comes back as an unsigned, non-multipart :class:`Message`.
    """

    def __init__(self, max_bytes: int, max_messages: int):
        self.max_bytes = _check_bound(max_bytes, "max_bytes")
        self.max_messages = _check_bound(max_messages, "max_messages")
        self._partials: dict[tuple[bytes, int], _Partial] = {}
        self._bytes = 0

    @property
    def pending(self) -> int:
        """The number of messages with chunks buffered."""
        return len(self._partials)

    @property
    def buffered_bytes(self) -> int:
        """The bytes buffered, as counted against ``max_bytes``."""
        return self._bytes

    def clear(self) -> None:
        """Drop every buffered chunk (a new round)."""
        self._partials.clear()
        self._bytes = 0

    def _drop(self, key: tuple[bytes, int], why: str):
        partial = self._partials.pop(key)
        self._bytes -= sum(_cost(d) for d in partial.chunks.values())
        return MultipartError(f"multipart message {key[1]} of {key[0].hex()}: {why}",
                              reason="inconsistent")

    def add(self, message: Message) -> Message | None:
        """Take one (parsed) message: a non-multipart one comes straight back, a chunk is
        buffered and gives ``None``, or the whole message when it completes one.

        Raises :class:`~bbjax.errors.MultipartError` for a chunk it refuses (its ``reason``
        says why) and :class:`~bbjax.errors.PetDecodeError` for a whole message whose
        payload does not parse (its chunks are dropped either way).
        """
        if not isinstance(message, Message):
            raise InvalidArgument(f"Reassembler.add takes a Message, got {type(message).__name__}")
        if not message.is_multipart:
            return message
        chunk: Chunk = message.payload
        key = (message.participant_pk, chunk.message_id)
        partial = self._partials.get(key)
        if partial is None:
            if len(self._partials) >= self.max_messages:
                raise MultipartError(f"{self.max_messages} multipart messages already pending",
                                     reason="messages_limit")
        else:
            if partial.tag != message.tag or partial.coordinator_pk != message.coordinator_pk:
                raise self._drop(key, "a chunk with another tag or coordinator key")
            old = partial.chunks.get(chunk.id)
            if old is not None:
                if old == chunk.data and chunk.last == (partial.last_id == chunk.id):
                    return None
                raise self._drop(key, f"chunk {chunk.id} sent twice, differently")
            if partial.last_id is not None and (chunk.last or chunk.id > partial.last_id):
                raise self._drop(key, f"chunk {chunk.id} after last chunk {partial.last_id}")
            if chunk.last and max(partial.chunks) > chunk.id:
                raise self._drop(key, f"last chunk {chunk.id} below chunk {max(partial.chunks)}")
        if self._bytes + _cost(chunk.data) > self.max_bytes:
            raise MultipartError(f"{self._bytes} of {self.max_bytes} bytes already buffered",
                                 reason="bytes_limit")
        if partial is None:
            partial = self._partials[key] = _Partial(message.tag, message.coordinator_pk)
        partial.chunks[chunk.id] = chunk.data
        self._bytes += _cost(chunk.data)
        if chunk.last:
            partial.last_id = chunk.id
        if partial.last_id is None or len(partial.chunks) < partial.last_id + 1:
            return None
        del self._partials[key]
        self._bytes -= sum(_cost(d) for d in partial.chunks.values())
        data = b"".join(partial.chunks[i] for i in range(partial.last_id + 1))
        try:
            payload = parse_payload(partial.tag, data)
        except PetDecodeError as e:
            raise PetDecodeError(f"multipart message {chunk.message_id}: {e}") from None
        return Message(message.participant_pk, partial.coordinator_pk, payload)

    def to_bytes(self) -> bytes:
        """The bounds and every buffered chunk, for :meth:`from_bytes`."""
        out = [struct.pack(">QII", self.max_bytes, self.max_messages, len(self._partials))]
        for (pk, message_id), p in self._partials.items():
            last = 0xFFFFFFFF if p.last_id is None else p.last_id
            out.append(pk + p.coordinator_pk + struct.pack(">HBII", message_id, p.tag, last,
                                                           len(p.chunks)))
            out.extend(struct.pack(">HI", i, len(d)) + d for i, d in p.chunks.items())
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Reassembler:
        """The reassembler :meth:`to_bytes` wrote; anything else raises :class:`PetDecodeError`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise PetDecodeError(f"reassembler state must be bytes, got {type(data).__name__}")
        data = bytes(data)
        reader = _Reader(data)
        max_bytes, max_messages, count = reader.unpack(">QII")
        result = cls(max_bytes, max_messages)
        for _ in range(count):
            pk, coordinator_pk = reader.take(PUBLIC_KEY_LENGTH), reader.take(PUBLIC_KEY_LENGTH)
            message_id, tag, last, n_chunks = reader.unpack(">HBII")
            if not Tag.is_tag(tag) or (last != 0xFFFFFFFF and last > 0xFFFF):
                raise PetDecodeError("reassembler state: bad tag or last chunk id")
            if (pk, message_id) in result._partials:
                raise PetDecodeError("reassembler state: a message listed twice")
            partial = _Partial(Tag(tag), coordinator_pk, None if last == 0xFFFFFFFF else last)
            for _ in range(n_chunks):
                chunk_id, size = reader.unpack(">HI")
                if chunk_id in partial.chunks:
                    raise PetDecodeError("reassembler state: a chunk listed twice")
                partial.chunks[chunk_id] = reader.take(size)
                result._bytes += _cost(partial.chunks[chunk_id])
            result._partials[(pk, message_id)] = partial
        if reader.offset != len(data):
            raise PetDecodeError("reassembler state: trailing bytes")
        return result


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.offset = data, 0

    def take(self, size: int) -> bytes:
        if len(self.data) - self.offset < size:
            raise PetDecodeError("reassembler state: truncated")
        self.offset += size
        return self.data[self.offset - size:self.offset]

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))
