"""bbjax's wire format without JAX: envelopes and tensors, byte for byte as
:mod:`bbjax.runtime.envelope` and :mod:`bbjax.runtime.tensor_codec` write them.

The layout is in ``docs/envelope.md``. Decoding is total: any input gives a value or one of
the :class:`~bbjax.errors.EnvelopeError` classes the JAX-side codec raises for it, and every
declared length is checked against :class:`Limits` before anything is copied.
"""

from __future__ import annotations

import math
import numbers
import struct
import sys
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from bbjax.errors import (
    MalformedEnvelope,
    OversizedEnvelope,
    TensorDecodeError,
    TensorEncodeError,
    TruncatedEnvelope,
    UnsupportedVersion,
)

MAGIC = b"BBJE"
FORMAT_VERSION = 1

_HEADER = struct.Struct("<4sHI")  # magic, version, total length
_U16, _U32, _U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")
_CHECKSUM = 4
_MIN_LENGTH = _HEADER.size + 8 + 8 + 2 + 1 + 2 + _CHECKSUM
_MiB = 1 << 20

_CODES = (1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 16)  # ONNX TensorProto.DataType values
_BY_CODE = {code: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(code)) for code in _CODES}
_BY_DTYPE = {dtype: code for code, dtype in _BY_CODE.items()}
_NAMES = {code: "bfloat16" if code == 16 else str(dtype) for code, dtype in _BY_CODE.items()}
_PREFIX = struct.Struct("<BB")  # dtype code, rank
_SWAP = sys.byteorder == "big"


@dataclass(frozen=True)
class Limits:
    """The caps of :class:`bbjax.runtime.Limits`, with the same defaults."""

    max_envelope_bytes: int = 16 * _MiB
    max_fills: int = 64
    max_fill_bytes: int = 16 * _MiB
    max_id_bytes: int = 256
    max_tensor_rank: int = 8


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Fill:
    """One value for one input site of the destination (``port/index``)."""

    site: str
    type_hash: int
    payload: bytes


@dataclass(frozen=True)
class Envelope:
    """A source peer id, the fills, a correlation id and the remaining deadline (ns)."""

    source: str
    fills: tuple[Fill, ...]
    correlation: int = 0
    deadline_ns: int = 0


# -- envelopes -----------------------------------------------------------------------------

def encode(envelope: Envelope, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The wire bytes of ``envelope``; :class:`MalformedEnvelope` for a field of the wrong
    type or range, :class:`OversizedEnvelope` over a cap of ``limits``."""
    if not isinstance(envelope, Envelope):
        raise MalformedEnvelope(f"expected an Envelope, got {type(envelope).__name__}",
                                field="envelope")
    correlation = _u64(envelope.correlation, "correlation")
    deadline_ns = _u64(envelope.deadline_ns, "deadline_ns")
    source = _id(envelope.source, "source", limits)
    fills = envelope.fills
    if not isinstance(fills, tuple | list):
        raise MalformedEnvelope(f"expected a tuple of Fill, got {type(fills).__name__}",
                                field="fills")
    if len(fills) > limits.max_fills:
        raise _oversized("max_fills", len(fills), limits, "fill_count")
    parts = [_U64.pack(correlation), _U64.pack(deadline_ns), _U16.pack(len(source)), source,
             _U16.pack(len(fills))]
    for i, fill in enumerate(fills):
        if not isinstance(fill, Fill):
            raise MalformedEnvelope(f"expected a Fill, got {type(fill).__name__}",
                                    field=f"fills[{i}]")
        site = _id(fill.site, f"fills[{i}].site", limits)
        type_hash_ = _u64(fill.type_hash, f"fills[{i}].type_hash")
        if not isinstance(fill.payload, bytes | bytearray | memoryview):
            raise MalformedEnvelope(f"must be bytes, got {type(fill.payload).__name__}",
                                    field=f"fills[{i}].payload")
        payload = bytes(fill.payload)
        if len(payload) > limits.max_fill_bytes:
            raise _oversized("max_fill_bytes", len(payload), limits, f"fills[{i}].payload")
        parts += [_U16.pack(len(site)), site, _U64.pack(type_hash_), _U32.pack(len(payload)),
                  payload]
    length = _HEADER.size + sum(len(p) for p in parts) + _CHECKSUM
    if length > limits.max_envelope_bytes:
        raise _oversized("max_envelope_bytes", length, limits, "length")
    body = b"".join([_HEADER.pack(MAGIC, FORMAT_VERSION, length), *parts])
    return body + _U32.pack(zlib.crc32(body))


def decode(data: bytes | bytearray | memoryview, *, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """The :class:`Envelope` in ``data``, or the EnvelopeError bbjax's decoder raises."""
    view = _view(data, MalformedEnvelope)
    size = len(view)
    magic = bytes(view[:4])
    if magic != MAGIC[: len(magic)]:
        raise MalformedEnvelope(f"expected magic {MAGIC!r}, got {magic!r}", field="magic",
                                offset=0)
    for field, start, end in (("magic", 0, 4), ("version", 4, 6)):
        _require(size, field, start, end)
    version = _U16.unpack_from(view, 4)[0]
    if version != FORMAT_VERSION:
        raise UnsupportedVersion(version, supported=FORMAT_VERSION, offset=4)
    _require(size, "length", 6, _HEADER.size)
    length = _U32.unpack_from(view, 6)[0]
    if length > limits.max_envelope_bytes:
        raise _oversized("max_envelope_bytes", length, limits, "length", 6)
    if length < _MIN_LENGTH:
        raise MalformedEnvelope(f"declares {length} bytes, below the minimum of {_MIN_LENGTH}",
                                field="length", offset=6)
    if size < length:
        raise TruncatedEnvelope(f"declares {length} bytes but the input has {size}",
                                field="length", offset=6)
    if size > length:
        raise MalformedEnvelope(f"{size - length} bytes after the declared end", field="data",
                                offset=length)
    end = length - _CHECKSUM
    stored, computed = _U32.unpack_from(view, end)[0], zlib.crc32(view[:end])
    if stored != computed:
        raise MalformedEnvelope(f"stored CRC32 {stored:#010x} != {computed:#010x} computed "
                                f"over [0, {end})", field="checksum", offset=end)
    reader = _Reader(view, _HEADER.size, end)
    correlation = reader.uint(_U64, "correlation")
    deadline_ns = reader.uint(_U64, "deadline_ns")
    source = reader.text("source", limits)
    count_at = reader.pos
    count = reader.uint(_U16, "fill_count")
    if count > limits.max_fills:
        raise _oversized("max_fills", count, limits, "fill_count", count_at)
    fills = tuple(reader.fill(i, limits) for i in range(count))
    if reader.pos != end:
        raise MalformedEnvelope(f"{end - reader.pos} bytes left after the last fill",
                                field="checksum", offset=reader.pos)
    return Envelope(source, fills, correlation, deadline_ns)


class _Reader:
    def __init__(self, view: memoryview, pos: int, end: int):
        self.view, self.pos, self.end = view, pos, end

    def take(self, size: int, field: str) -> memoryview:
        if size > self.end - self.pos:
            raise MalformedEnvelope(f"needs {size} bytes but {self.end - self.pos} remain "
                                    "before the checksum", field=field, offset=self.pos)
        self.pos += size
        return self.view[self.pos - size: self.pos]

    def uint(self, fmt: struct.Struct, field: str) -> int:
        return fmt.unpack(self.take(fmt.size, field))[0]

    def text(self, field: str, limits: Limits) -> str:
        at = self.pos
        size = self.uint(_U16, f"{field}.length")
        if size == 0:
            raise MalformedEnvelope("must not be 0", field=f"{field}.length", offset=at)
        if size > limits.max_id_bytes:
            raise _oversized("max_id_bytes", size, limits, f"{field}.length", at)
        raw = self.take(size, field)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as error:
            raise MalformedEnvelope(f"invalid UTF-8 at byte {error.start}", field=field,
                                    offset=at + 2) from None

    def fill(self, index: int, limits: Limits) -> Fill:
        field = f"fills[{index}]"
        site = self.text(f"{field}.site", limits)
        type_hash_ = self.uint(_U64, f"{field}.type_hash")
        at = self.pos
        size = self.uint(_U32, f"{field}.payload.length")
        if size > limits.max_fill_bytes:
            raise _oversized("max_fill_bytes", size, limits, f"{field}.payload.length", at)
        return Fill(site, type_hash_, bytes(self.take(size, f"{field}.payload")))


def _view(data: object, error: type) -> memoryview:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise error(f"expected bytes, got {type(data).__name__}", field="data", offset=0)
    try:
        return memoryview(data).cast("B")
    except (TypeError, ValueError) as cause:
        raise error(f"unreadable buffer: {cause}", field="data", offset=0) from None


def _require(size: int, field: str, start: int, end: int) -> None:
    if size < end:
        raise TruncatedEnvelope(f"the input ends after {size} bytes, inside this field",
                                field=field, offset=start)


def _oversized(cap: str, size: int, limits: Limits, field: str,
               offset: int | None = None) -> OversizedEnvelope:
    limit = getattr(limits, cap)
    return OversizedEnvelope(f"{size} exceeds Limits.{cap} = {limit}", size=size, limit=limit,
                             field=field, offset=offset)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _u64(value: object, field: str) -> int:
    if not _is_int(value) or not 0 <= value < 2**64:
        raise MalformedEnvelope(f"must be an integer in [0, 2**64), got {value!r}", field=field)
    return int(value)


def _id(value: object, field: str, limits: Limits) -> bytes:
    if not isinstance(value, str) or not value:
        raise MalformedEnvelope(f"must be a non-empty str, got {value!r}", field=field)
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise MalformedEnvelope(f"not encodable as UTF-8: {error.reason}", field=field) from None
    if len(raw) > limits.max_id_bytes:
        raise _oversized("max_id_bytes", len(raw), limits, field)
    return raw


# -- tensors -------------------------------------------------------------------------------

def fnv1a64(data: bytes) -> int:
    """The 64-bit FNV-1a hash of ``data``."""
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def tensor_type_name(dtype: Any, shape: tuple[int, ...]) -> str:
    """``"tensor<float32>[3,4]"``: the canonical name of a tensor type."""
    code = _code(dtype)
    dims = tuple(shape)
    if not all(_is_int(d) and d >= 0 for d in dims):
        raise TensorEncodeError(f"dims must be integers >= 0, got {shape!r}", field="shape")
    return f"tensor<{_NAMES[code]}>[{','.join(str(int(d)) for d in dims)}]"


def type_hash(dtype: Any, shape: tuple[int, ...]) -> int:
    """The u64 type hash of a tensor fill: :func:`fnv1a64` of :func:`tensor_type_name`."""
    return fnv1a64(tensor_type_name(dtype, shape).encode("ascii"))


def encode_tensor(array: Any, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The wire bytes of ``array``; :class:`TensorEncodeError` for an unsupported dtype, a
    rank over ``limits.max_tensor_rank`` or a size :func:`decode_tensor` would refuse."""
    try:
        array = np.asarray(array)
    except (TypeError, ValueError) as error:
        raise TensorEncodeError(f"not convertible to an array: {error}", field="array") from None
    code = _code(array.dtype)
    if array.ndim > limits.max_tensor_rank:
        raise TensorEncodeError(f"rank {array.ndim} exceeds Limits.max_tensor_rank = "
                                f"{limits.max_tensor_rank}", field="rank")
    problem = _size_problem(array.shape, array.dtype.itemsize, limits)
    if problem:
        raise TensorEncodeError(problem, field="dims")
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and _SWAP):
        array = array.byteswap()
    prefix = _PREFIX.pack(code, array.ndim) + struct.pack(f"<{array.ndim}Q", *array.shape)
    return prefix + array.tobytes()


def decode_tensor(data: bytes | bytearray | memoryview, *,
                  limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """The array in ``data`` (new, writable, native byte order), or
    :class:`TensorDecodeError`."""
    view = _view(data, TensorDecodeError)
    size = len(view)
    if size > limits.max_fill_bytes:
        raise TensorDecodeError(f"{size} bytes exceed Limits.max_fill_bytes = "
                                f"{limits.max_fill_bytes}", field="data", offset=0)
    if size < _PREFIX.size:
        raise TensorDecodeError(f"the input ends after {size} bytes",
                                field=("dtype", "rank")[size], offset=size)
    code, rank = _PREFIX.unpack_from(view)
    if code not in _BY_CODE:
        raise TensorDecodeError(f"unknown dtype code {code}", field="dtype", offset=0)
    dtype = _BY_CODE[code]
    if rank > limits.max_tensor_rank:
        raise TensorDecodeError(f"rank {rank} exceeds Limits.max_tensor_rank = "
                                f"{limits.max_tensor_rank}", field="rank", offset=1)
    data_at = _PREFIX.size + 8 * rank
    if size < data_at:
        raise TensorDecodeError(f"{rank} dims need {8 * rank} bytes but "
                                f"{size - _PREFIX.size} remain", field="dims",
                                offset=_PREFIX.size)
    shape = struct.unpack_from(f"<{rank}Q", view, _PREFIX.size)
    problem = _size_problem(shape, dtype.itemsize, limits)
    if problem:
        raise TensorDecodeError(problem, field="dims", offset=_PREFIX.size)
    count = math.prod(shape)
    if size - data_at != count * dtype.itemsize:
        raise TensorDecodeError(f"{_NAMES[code]}{list(shape)} needs {count * dtype.itemsize} "
                                f"bytes, got {size - data_at}", field="elements",
                                offset=data_at)
    if dtype.kind == "b":
        bad = np.flatnonzero(np.frombuffer(view, np.uint8, count, data_at) > 1)
        if bad.size:
            raise TensorDecodeError("a bool byte is neither 0 nor 1", field="elements",
                                    offset=data_at + int(bad[0]))
    array = np.frombuffer(view, dtype, count, data_at).reshape(shape)
    return array.byteswap() if _SWAP else array.copy()


def _code(dtype: Any) -> int:
    try:
        dtype = np.dtype(dtype)
    except (TypeError, ValueError):
        raise TensorEncodeError(f"not a dtype: {dtype!r}", field="dtype") from None
    code = _BY_DTYPE.get(dtype.newbyteorder("=") if dtype.byteorder in "<>" else dtype)
    if code is None:
        supported = ", ".join(_NAMES[c] for c in _CODES)
        raise TensorEncodeError(f"unsupported dtype {dtype} (supported: {supported})",
                                field="dtype")
    return code


def _size_problem(shape: tuple[int, ...], itemsize: int, limits: Limits) -> str | None:
    elements = itemsize * math.prod(max(dim, 1) for dim in shape)
    bound = _PREFIX.size + 8 * len(shape) + elements
    if bound > limits.max_fill_bytes:
        return (f"shape {list(shape)} (zero dims counted as 1) needs {bound} bytes, over "
                f"Limits.max_fill_bytes = {limits.max_fill_bytes}")
    return None
