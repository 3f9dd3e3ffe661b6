"""A versioned byte form for dataclasses whose fields declare their kinds.

A field whose metadata is :func:`encoded_as` a :class:`Kind` declares its byte form;
:func:`to_bytes` writes every field in declaration order and :func:`from_bytes` reads them
back, checking each value against a context (for a NodeState: the installed node) before
anything is built. A new field needs its declaration only.

Layout (all integers little-endian)::

    magic (4 bytes) | format (u16) | per field: name (text), value | CRC32 (u32) of the rest

Values: lengths and counts are minimal LEB128, integers zigzag LEB128 (so a field's bytes
do not depend on its declared range); text is a length and UTF-8; bytes a length and the
bytes; a tensor a length and its tensor wire bytes (``docs/envelope.md``); an optional a 0
byte (absent) or a 1 byte and the value; a sequence a count and its items; a map a count
and (key, value) pairs, no key twice; a record its fields in order; a tagged value the
variant's name and its record. The form is canonical: bytes that decode are the bytes of
what they decode to.

Decoding is total: any input gives the value or a :class:`~bbjax.errors.SnapshotError`
naming the field path at fault (``state.pending['update'][0][4]``), and nothing is
allocated beyond what the input holds.
"""

from __future__ import annotations

import abc
import dataclasses
import reprlib
import struct
import zlib
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from bbjax.errors import SnapshotError, TensorDecodeError, TensorEncodeError
from bbjax.runtime.envelope import Limits
from bbjax.runtime.tensor_codec import decode_tensor, encode_tensor

KIND = "bbjax.kind"  # the field metadata key naming a field's Kind
# every tensor the format can carry (up to 4 GiB, rank 255)
TENSOR_LIMITS = Limits(max_fill_bytes=2**32 - 1, max_tensor_rank=255)
_HEAD = struct.Struct("<4sH")
_CRC = struct.Struct("<I")
_MAX_VARINT = 19  # bytes: integers below 2**133


def encoded_as(kind: Kind) -> dict[str, Kind]:
    """The metadata of a dataclass field of ``kind``: ``field(metadata=encoded_as(kind))``."""
    return {KIND: kind}


def to_bytes(value: Any, *, magic: bytes, version: int, where: str) -> bytes:
    """The bytes of dataclass ``value``; :class:`SnapshotError` naming the field for a value
    its kind cannot hold."""
    out = Writer()
    out.raw(_HEAD.pack(magic, version))
    for name, kind in _kinds(type(value)):
        TEXT.write(out, name, where)
        kind.write(out, getattr(value, name), f"{where}.{name}")
    body = out.getvalue()
    return body + _CRC.pack(zlib.crc32(body))


def from_bytes(cls: type, data: Any, ctx: Any, *, magic: bytes, version: int,
               where: str) -> Any:
    """The ``cls`` whose :func:`to_bytes` are ``data``, every field checked against ``ctx``;
    :class:`SnapshotError` for any other input."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SnapshotError(f"{where}: expected bytes, got {type(data).__name__}")
    try:
        view = memoryview(data).cast("B")
    except (ValueError, TypeError) as exc:  # a released or non-contiguous buffer
        raise SnapshotError(f"{where}: unreadable buffer: {exc}") from exc
    if len(view) < _HEAD.size + _CRC.size:
        raise SnapshotError(f"{where}: {len(view)} bytes, shorter than the "
                            f"{_HEAD.size + _CRC.size}-byte header and checksum")
    found, got = _HEAD.unpack_from(view)
    if found != magic:
        raise SnapshotError(f"{where}: starts with {found!r}, not {magic!r}")
    if got != version:
        raise SnapshotError(f"{where}: format {got}, this version reads {version}")
    end = len(view) - _CRC.size
    stored, computed = _CRC.unpack_from(view, end)[0], zlib.crc32(view[:end])
    if stored != computed:
        raise SnapshotError(f"{where}: stored CRC32 {stored:#010x} != {computed:#010x} "
                            "computed over the bytes before it")
    inp = Reader(view, _HEAD.size, end)
    values = {}
    for name, kind in _kinds(cls):
        if (given := TEXT.read(inp, ctx, where)) != name:
            raise SnapshotError(f"{where}: expected field {name!r} next, got {_show(given)}")
        values[name] = kind.read(inp, ctx, f"{where}.{name}")
    if inp.remaining:
        raise SnapshotError(f"{where}: {inp.remaining} bytes after the last field")
    return cls(**values)


def _kinds(cls: type) -> list[tuple[str, Kind]]:
    kinds = [(f.name, f.metadata.get(KIND)) for f in dataclasses.fields(cls)]
    undeclared = [name for name, kind in kinds if not isinstance(kind, Kind)]
    if undeclared:
        raise TypeError(f"{cls.__name__} fields {undeclared} declare no Kind")
    return kinds


def _show(value: Any) -> str:
    return reprlib.repr(value)


# -- bytes in and out ------------------------------------------------------------------------


class Writer:
    """Bytes being written, in parts joined once."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, data: bytes) -> None:
        self._parts.append(data)

    def uint(self, value: int) -> None:
        """``value`` (>= 0) as minimal LEB128."""
        out = bytearray()
        while value >= 0x80:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
        self._parts.append(bytes(out))

    def blob(self, data: bytes) -> None:
        self.uint(len(data))
        self._parts.append(data)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """A cursor over ``view[start:end]``; every read checks what remains first."""

    def __init__(self, view: memoryview, start: int, end: int):
        self._view, self._at, self._end = view, start, end

    @property
    def remaining(self) -> int:
        return self._end - self._at

    def take(self, size: int, where: str) -> memoryview:
        if size > self.remaining:
            raise SnapshotError(f"{where}: needs {size} bytes, {self.remaining} remain")
        start, self._at = self._at, self._at + size
        return self._view[start:self._at]

    def byte(self, where: str) -> int:
        return self.take(1, where)[0]

    def uint(self, where: str) -> int:
        """A minimal LEB128 integer."""
        value = shift = 0
        for i in range(_MAX_VARINT):
            byte = self.byte(where)
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if byte == 0 and i:
                    raise SnapshotError(f"{where}: an integer with a redundant last byte")
                return value
            shift += 7
        raise SnapshotError(f"{where}: an integer longer than {_MAX_VARINT} bytes")

    def count(self, where: str) -> int:
        """A count of items, each at least one byte, so at most what remains."""
        n = self.uint(where)
        if n > self.remaining:
            raise SnapshotError(f"{where}: {n} items declared, {self.remaining} bytes remain")
        return n

    def blob(self, where: str) -> memoryview:
        return self.take(self.count(where), where)


# -- kinds ------------------------------------------------------------------------------------


class Kind(abc.ABC):
    """How one value is written and read back: ``write`` raises :class:`SnapshotError`
    for a value the kind cannot hold, ``read`` for bytes that are not such a value or that
    ``ctx`` does not allow. Every value takes at least one byte."""

    @abc.abstractmethod
    def write(self, out: Writer, value: Any, where: str) -> None:
        """Append ``value``'s bytes to ``out`` (``where`` names it in errors)."""

    @abc.abstractmethod
    def read(self, inp: Reader, ctx: Any, where: str) -> Any:
        """The value whose bytes come next in ``inp``, checked against ``ctx``."""


def _unsaveable(where: str, why: str) -> SnapshotError:
    return SnapshotError(f"{where}: cannot be saved: {why}")


@dataclasses.dataclass(frozen=True)
class Int(Kind):
    """An integer in [low, high]."""

    low: int
    high: int

    def _check(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) \
                or not self.low <= value <= self.high:
            return f"expected an integer in [{self.low}, {self.high}], got {_show(value)}"
        return None

    def write(self, out: Writer, value: Any, where: str) -> None:
        if (why := self._check(value)) is not None:
            raise _unsaveable(where, why)
        value = int(value)
        out.uint(2 * value if value >= 0 else -2 * value - 1)

    def read(self, inp: Reader, ctx: Any, where: str) -> int:
        raw = inp.uint(where)
        value = raw >> 1 if raw % 2 == 0 else -(raw >> 1) - 1
        if (why := self._check(value)) is not None:
            raise SnapshotError(f"{where}: {why}")
        return value


class Text(Kind):
    """A string (UTF-8)."""

    def write(self, out: Writer, value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise _unsaveable(where, f"expected a string, got {_show(value)}")
        try:
            out.blob(value.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise _unsaveable(where, str(exc)) from exc

    def read(self, inp: Reader, ctx: Any, where: str) -> str:
        try:
            return str(inp.blob(where), "utf-8")
        except UnicodeDecodeError as exc:
            raise SnapshotError(f"{where}: not UTF-8 text: {exc}") from exc


TEXT = Text()


@dataclasses.dataclass(frozen=True)
class Blob(Kind):
    """Bytes, at most ``limit(ctx)`` = (size, its name) of them when ``limit`` is given."""

    limit: Callable[[Any], tuple[int, str]] | None = None

    def write(self, out: Writer, value: Any, where: str) -> None:
        if not isinstance(value, bytes):
            raise _unsaveable(where, f"expected bytes, got {type(value).__name__}")
        out.blob(value)

    def read(self, inp: Reader, ctx: Any, where: str) -> bytes:
        data = bytes(inp.blob(where))
        if self.limit is not None:
            cap, name = self.limit(ctx)
            if len(data) > cap:
                raise SnapshotError(f"{where}: {len(data)} bytes, over {name} = {cap}")
        return data


@dataclasses.dataclass(frozen=True)
class Tensor(Kind):
    """An array in the tensor wire format, of exactly ``dtype`` and ``shape`` when given
    (read back as a numpy array)."""

    dtype: np.dtype | None = None
    shape: tuple[int, ...] | None = None

    def write(self, out: Writer, value: Any, where: str) -> None:
        try:
            out.blob(encode_tensor(np.asarray(value), limits=TENSOR_LIMITS))
        except (TensorEncodeError, TypeError, ValueError) as exc:
            raise _unsaveable(where, str(exc)) from exc

    def read(self, inp: Reader, ctx: Any, where: str) -> np.ndarray:
        try:
            array = decode_tensor(inp.blob(where), limits=TENSOR_LIMITS)
        except TensorDecodeError as exc:
            raise SnapshotError(f"{where}: {exc}") from exc
        if self.dtype is not None and (array.dtype, array.shape) != (self.dtype, self.shape):
            raise SnapshotError(f"{where}: {array.dtype}{list(array.shape)}, the installed "
                                f"node holds {self.dtype}{list(self.shape)} there")
        return array


TENSOR = Tensor()


@dataclasses.dataclass(frozen=True)
class Optional(Kind):
    """``inner``'s value or None."""

    inner: Kind

    def write(self, out: Writer, value: Any, where: str) -> None:
        out.uint(0 if value is None else 1)
        if value is not None:
            self.inner.write(out, value, where)

    def read(self, inp: Reader, ctx: Any, where: str) -> Any:
        flag = inp.byte(where)
        if flag > 1:
            raise SnapshotError(f"{where}: presence byte {flag}, expected 0 or 1")
        return self.inner.read(inp, ctx, where) if flag else None


@dataclasses.dataclass(frozen=True)
class Member(Kind):
    """``inner``'s value, one of ``allowed(ctx)`` (``what`` names that set in errors)."""

    inner: Kind
    allowed: Callable[[Any], Collection]
    what: str

    def write(self, out: Writer, value: Any, where: str) -> None:
        self.inner.write(out, value, where)

    def read(self, inp: Reader, ctx: Any, where: str) -> Any:
        value = self.inner.read(inp, ctx, where)
        allowed = self.allowed(ctx)
        if value not in allowed:
            raise SnapshotError(f"{where}: {_show(value)} is not one of {self.what} "
                                f"{_show(sorted(allowed))}")
        return value


@dataclasses.dataclass(frozen=True)
class Seq(Kind):
    """A sequence of ``item`` values, read back as ``into(items)``; at least ``min_size``
    and at most ``limit(ctx)`` = (count, its name) items when ``limit`` is given."""

    item: Kind
    into: Callable[[list], Any] = tuple
    min_size: int = 0
    limit: Callable[[Any], tuple[int, str]] | None = None

    def write(self, out: Writer, value: Any, where: str) -> None:
        items = list(value)
        out.uint(len(items))
        for i, item in enumerate(items):
            self.item.write(out, item, f"{where}[{i}]")

    def read(self, inp: Reader, ctx: Any, where: str) -> Any:
        n = inp.count(where)
        if n < self.min_size:
            raise SnapshotError(f"{where}: {n} items, expected at least {self.min_size}")
        if self.limit is not None:
            cap, name = self.limit(ctx)
            if n > cap:
                raise SnapshotError(f"{where}: {n} items, over {name} = {cap}")
        return self.into([self.item.read(inp, ctx, f"{where}[{i}]") for i in range(n)])


@dataclasses.dataclass(frozen=True)
class Map(Kind):
    """A dict from ``key`` values to ``value`` values, in its order; with ``keys``, exactly
    the keys ``keys(ctx)``; with ``value_of``, each value read with the stricter kind
    ``value_of(ctx, key)`` (which writes as ``value`` does)."""

    key: Kind
    value: Kind
    keys: Callable[[Any], Collection] | None = None
    value_of: Callable[[Any, Any], Kind] | None = None

    def write(self, out: Writer, value: Any, where: str) -> None:
        out.uint(len(value))
        for key, item in value.items():
            self.key.write(out, key, f"{where} key")
            self.value.write(out, item, f"{where}[{key!r}]")

    def read(self, inp: Reader, ctx: Any, where: str) -> dict:
        expected = None if self.keys is None else self.keys(ctx)
        out: dict = {}
        for _ in range(inp.count(where)):
            key = self.key.read(inp, ctx, f"{where} key")
            if key in out:
                raise SnapshotError(f"{where}: key {_show(key)} appears twice")
            if expected is not None and key not in expected:
                raise SnapshotError(f"{where}: key {_show(key)} is not one of the installed "
                                    f"node's {_show(sorted(expected))}")
            kind = self.value if self.value_of is None else self.value_of(ctx, key)
            out[key] = kind.read(inp, ctx, f"{where}[{key!r}]")
        if expected is not None and len(out) != len(expected):
            missing = sorted(k for k in expected if k not in out)
            raise SnapshotError(f"{where}: keys {_show(missing)} of the installed node are "
                                "missing")
        return out


class Record(Kind):
    """A ``cls`` built from its fields, each of the kind given for it, in that order."""

    def __init__(self, cls: type, **fields: Kind):
        self.cls, self.fields = cls, fields

    def write(self, out: Writer, value: Any, where: str) -> None:
        if type(value) is not self.cls:
            raise _unsaveable(where, f"expected a {self.cls.__name__}, got "
                              f"{type(value).__name__}")
        for name, kind in self.fields.items():
            kind.write(out, getattr(value, name), f"{where}.{name}")

    def read(self, inp: Reader, ctx: Any, where: str) -> Any:
        return self.cls(**{name: kind.read(inp, ctx, f"{where}.{name}")
                           for name, kind in self.fields.items()})


class Tagged(Kind):
    """One of several records, written as its variant's name then the record."""

    def __init__(self, **variants: Record):
        self.variants = variants
        self._tags = {record.cls: tag for tag, record in variants.items()}

    def write(self, out: Writer, value: Any, where: str) -> None:
        tag = self._tags.get(type(value))
        if tag is None:
            raise _unsaveable(where, f"expected one of {list(self.variants)}, got "
                              f"{type(value).__name__}")
        TEXT.write(out, tag, where)
        self.variants[tag].write(out, value, f"{where}.{tag}")

    def read(self, inp: Reader, ctx: Any, where: str) -> Any:
        tag = TEXT.read(inp, ctx, where)
        if tag not in self.variants:
            raise SnapshotError(f"{where}: variant {_show(tag)}, expected one of "
                                f"{list(self.variants)}")
        return self.variants[tag].read(inp, ctx, f"{where}.{tag}")


@dataclasses.dataclass(frozen=True)
class Arrays(Kind):
    """A fixed list of arrays of the given (dtype, shape) types, read back as a tuple."""

    types: tuple[tuple[np.dtype, tuple[int, ...]], ...]

    def write(self, out: Writer, value: Any, where: str) -> None:
        Seq(TENSOR).write(out, value, where)

    def read(self, inp: Reader, ctx: Any, where: str) -> tuple[np.ndarray, ...]:
        n = inp.count(where)
        if n != len(self.types):
            raise SnapshotError(f"{where}: {n} arrays, the installed node holds "
                                f"{len(self.types)} there")
        return tuple(Tensor(dtype, shape).read(inp, ctx, f"{where}[{i}]")
                     for i, (dtype, shape) in enumerate(self.types))

