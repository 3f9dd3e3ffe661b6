"""Signed, chunked network frames carrying envelope bytes between nodes.

Layout (big-endian)::

    magic b"BBSF" | version u8 (1) | kind u8 (0 whole, 1 chunk) | sender u32 | receiver u32
    | seq u64 | timestamp_ns u64 | signer public key 32
    | [chunk only: transfer u64 | index u32 | count u32]
    | payload length u32 | payload | Ed25519 signature 64 over everything before it

An envelope that fits ``max_frame_bytes`` travels as one whole frame; a larger one as
``count`` chunk frames of one ``transfer`` (the first chunk's seq), with ``index`` 0 … count−1
and seq rising by one per frame. :func:`decode_frame` checks the layout only; the signature
is checked by :meth:`Frame.verify` (the gate, which knows the peers, calls it)."""

from __future__ import annotations

import dataclasses
import struct

import nacl.exceptions
import nacl.signing

from bbjax.deploy.node.identity import Identity
from bbjax.errors import FrameError, InvalidArgument

MAGIC = b"BBSF"
VERSION = 1
WHOLE, CHUNK = 0, 1
_HEAD = struct.Struct(">4sBBIIQQ32s")
_CHUNK = struct.Struct(">QII")
_LENGTH = struct.Struct(">I")
SIGNATURE_BYTES = 64
WHOLE_OVERHEAD = _HEAD.size + _LENGTH.size + SIGNATURE_BYTES
CHUNK_OVERHEAD = WHOLE_OVERHEAD + _CHUNK.size
_U32, _U64 = 2**32 - 1, 2**64 - 1


@dataclasses.dataclass(frozen=True)
class Frame:
    """A decoded frame. Whole frames have ``transfer`` ``None``, ``index`` 0, ``count`` 1;
    ``signed_part`` is the bytes ``signature`` signs."""

    version: int
    kind: int
    sender: int
    receiver: int
    seq: int
    timestamp_ns: int
    signer: bytes
    transfer: int | None
    index: int
    count: int
    payload: bytes
    signed_part: bytes
    signature: bytes

    def verify(self) -> bool:
        """Whether ``signature`` is ``signer``'s over ``signed_part``."""
        try:
            nacl.signing.VerifyKey(self.signer).verify(self.signed_part, self.signature)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            return False
        return True


def encode_frames(identity: Identity, receiver: int, seq_start: int, envelope: bytes, *,
                  max_frame_bytes: int, timestamp_ns: int) -> list[bytes]:
    """``envelope`` from ``identity`` to ``receiver`` as signed frames of at most
    ``max_frame_bytes`` bytes, numbered ``seq_start``, ``seq_start + 1``, …"""
    envelope = bytes(envelope)
    _check("receiver", receiver, 2**31 - 1)
    _check("timestamp_ns", timestamp_ns, _U64)
    _check("seq_start", seq_start, _U64, low=1)
    if type(max_frame_bytes) is not int or max_frame_bytes <= CHUNK_OVERHEAD:
        raise InvalidArgument(f"max_frame_bytes must be an integer > {CHUNK_OVERHEAD}, got "
                              f"{max_frame_bytes!r}")
    head = (identity.peer, receiver)
    if WHOLE_OVERHEAD + len(envelope) <= max_frame_bytes:
        return [_sign(identity, _HEAD.pack(MAGIC, VERSION, WHOLE, *head, seq_start,
                                           timestamp_ns, identity.public), envelope)]
    size = max_frame_bytes - CHUNK_OVERHEAD
    count = -(-len(envelope) // size)
    if count > _U32 or seq_start + count - 1 > _U64:
        raise InvalidArgument(f"an envelope of {len(envelope)} bytes needs {count} frames of "
                              f"{max_frame_bytes} bytes from seq {seq_start}: too many")
    return [_sign(identity, _HEAD.pack(MAGIC, VERSION, CHUNK, *head, seq_start + i,
                                       timestamp_ns, identity.public)
                  + _CHUNK.pack(seq_start, i, count), envelope[i * size:(i + 1) * size])
            for i in range(count)]


def decode_frame(data: bytes, *, max_frame_bytes: int) -> Frame:
    """The frame in ``data`` (layout checks only); :class:`FrameError` naming the field."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FrameError(f"frame: {type(data).__name__} is not bytes")
    data = bytes(data)
    if len(data) > max_frame_bytes:
        raise FrameError(f"frame: {len(data)} bytes, over the {max_frame_bytes}-byte cap")
    if len(data) < WHOLE_OVERHEAD:
        raise FrameError(f"header: {len(data)} bytes, shorter than a frame's "
                         f"{WHOLE_OVERHEAD}")
    magic, version, kind, sender, receiver, seq, timestamp_ns, signer = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise FrameError(f"magic: {magic!r} is not {MAGIC!r}")
    if version != VERSION:
        raise FrameError(f"version: {version} is not {VERSION}")
    if kind not in (WHOLE, CHUNK):
        raise FrameError(f"kind: {kind} is neither {WHOLE} (whole) nor {CHUNK} (chunk)")
    for field, value in (("sender", sender), ("receiver", receiver)):
        if value > 2**31 - 1:
            raise FrameError(f"{field}: {value} is no peer id (over 2**31 - 1)")
    at = _HEAD.size
    transfer, index, count = None, 0, 1
    if kind == CHUNK:
        if len(data) < CHUNK_OVERHEAD:
            raise FrameError(f"chunk: {len(data)} bytes, shorter than a chunk frame's "
                             f"{CHUNK_OVERHEAD}")
        transfer, index, count = _CHUNK.unpack_from(data, at)
        if count < 1 or index >= count:
            raise FrameError(f"chunk.index: {index} is not below count {count}")
        at += _CHUNK.size
    (length,) = _LENGTH.unpack_from(data, at)
    at += _LENGTH.size
    if at + length + SIGNATURE_BYTES != len(data):
        raise FrameError(f"payload.length: {length} does not fit the frame's {len(data)} "
                         f"bytes (expected {len(data) - at - SIGNATURE_BYTES})")
    end = at + length
    return Frame(version, kind, sender, receiver, seq, timestamp_ns, signer, transfer, index,
                 count, data[at:end], data[:end], data[end:])


def _sign(identity: Identity, head: bytes, payload: bytes) -> bytes:
    signed = head + _LENGTH.pack(len(payload)) + payload
    return signed + identity.sign(signed)


def _check(name: str, value: int, high: int, low: int = 0) -> None:
    if type(value) is not int or not low <= value <= high:
        raise InvalidArgument(f"{name} must be an integer in [{low}, {high}], got {value!r}")
