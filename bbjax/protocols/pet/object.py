"""Mask objects: group elements of a masked model (or its mask) and of its scalar, with
xaynet's wire form.

Wire form (xaynet's ``object/serialization``): the vector part is its 4-byte config, a
big-endian u32 count and ``count`` numbers of ``bytes_per_number`` little-endian bytes each;
the unit part is its 4-byte config and one such number.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from bbjax.errors import MaskingError, PetDecodeError
from bbjax.protocols.pet.config import MaskConfig, MaskConfigPair

_CONFIG_BYTES = 4
_COUNT_BYTES = 4


def _check_config(owner: str, config: object) -> None:
    if not isinstance(config, MaskConfig):
        raise MaskingError(f"{owner} config: expected a MaskConfig, got {type(config).__name__}")


def _as_int(owner: str, value: object) -> int:
    if isinstance(value, bool):
        raise MaskingError(f"{owner}: expected an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise MaskingError(f"{owner}: expected an integer, got {value!r}") from None


def _as_ints(owner: str, values: Iterable[int]) -> tuple[int, ...]:
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or values.dtype.kind not in "iu":
            raise MaskingError(f"{owner}: expected a 1-D integer array, got {values.dtype}")
        return tuple(values.tolist())
    values = tuple(values)
    if all(type(v) is int for v in values):
        return values
    return tuple(_as_int(owner, v) for v in values)


@dataclass(frozen=True)
class MaskVect:
    """The vector part: one group element per model weight (a masked model or a mask)."""

    config: MaskConfig
    data: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_config("mask vect", self.config)
        object.__setattr__(self, "data", _as_ints("mask vect data", self.data))

    def is_valid(self) -> bool:
        """Every element lies in the group: ``0 <= v < order``."""
        order = self.config.order
        return all(0 <= v < order for v in self.data)

    def to_bytes(self) -> bytes:
        """The config, the big-endian u32 count and the little-endian numbers."""
        if len(self.data) >= 2**32:
            raise MaskingError(f"mask vect: {len(self.data)} elements do not fit a u32 count")
        numbers = _encode_numbers(self.data, self.config.bytes_per_number)
        return self.config.to_bytes() + len(self.data).to_bytes(4, "big") + numbers


@dataclass(frozen=True)
class MaskUnit:
    """The unit part: one group element for the scalar (a masked scalar or its mask)."""

    config: MaskConfig
    value: int

    def __post_init__(self) -> None:
        _check_config("mask unit", self.config)
        object.__setattr__(self, "value", _as_int("mask unit value", self.value))

    def is_valid(self) -> bool:
        """The element lies in the group: ``0 <= value < order``."""
        return 0 <= self.value < self.config.order

    def to_bytes(self) -> bytes:
        """The config and the little-endian number."""
        return self.config.to_bytes() + _encode_numbers((self.value,), self.config.bytes_per_number)


@dataclass(frozen=True)
class MaskObject:
    """A masked model with its masked scalar, or the mask of one (xaynet's ``MaskObject``)."""

    vect: MaskVect
    unit: MaskUnit

    def __post_init__(self) -> None:
        if not isinstance(self.vect, MaskVect) or not isinstance(self.unit, MaskUnit):
            raise MaskingError(
                "mask object: expected a MaskVect and a MaskUnit, got "
                f"{type(self.vect).__name__} and {type(self.unit).__name__}"
            )

    @property
    def config(self) -> MaskConfigPair:
        """The configurations of the vector and unit parts."""
        return MaskConfigPair(self.vect.config, self.unit.config)

    def is_valid(self) -> bool:
        """Both parts lie in their groups."""
        return self.vect.is_valid() and self.unit.is_valid()

    def to_bytes(self) -> bytes:
        """The vector part's bytes followed by the unit part's."""
        return self.vect.to_bytes() + self.unit.to_bytes()

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> tuple[MaskObject, int]:
        """Parse a mask object at ``data[offset:]``; returns it and the bytes it took.

        Anything malformed (truncated, bad config bytes, wrong types) raises
        :class:`PetDecodeError`. Numbers at or above the group order are parsed, as xaynet
        does; :meth:`is_valid` reports them.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise PetDecodeError(f"mask object: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= len(data):
            raise PetDecodeError(f"mask object: offset {offset!r} outside 0..{len(data)}")
        pos = offset
        vect_config, pos = _parse_config(data, pos, "vect")
        count = int.from_bytes(_take(data, pos, _COUNT_BYTES, "vect count"), "big")
        pos += _COUNT_BYTES
        bpn = vect_config.bytes_per_number
        numbers = _take(data, pos, count * bpn, f"vect data ({count} x {bpn} bytes)")
        pos += count * bpn
        unit_config, pos = _parse_config(data, pos, "unit")
        unit_bpn = unit_config.bytes_per_number
        unit_value = int.from_bytes(_take(data, pos, unit_bpn, "unit value"), "little")
        pos += unit_bpn
        vect = MaskVect(vect_config, _decode_numbers(numbers, count, bpn))
        return cls(vect, MaskUnit(unit_config, unit_value)), pos - offset

    @classmethod
    def from_bytes(cls, data: bytes) -> MaskObject:
        """Parse a buffer holding exactly one mask object (:class:`PetDecodeError` else)."""
        obj, used = cls.parse(data)
        if used != len(data):
            raise PetDecodeError(f"mask object: {len(data) - used} trailing bytes at {used}")
        return obj


def _take(data: bytes, pos: int, n: int, field: str) -> bytes:
    if len(data) - pos < n:
        raise PetDecodeError(
            f"mask object {field}: truncated at offset {pos}, needs {n} bytes, "
            f"{len(data) - pos} left"
        )
    return data[pos : pos + n]


def _parse_config(data: bytes, pos: int, part: str) -> tuple[MaskConfig, int]:
    raw = _take(data, pos, _CONFIG_BYTES, f"{part} config")
    try:
        return MaskConfig.from_bytes(raw), pos + _CONFIG_BYTES
    except MaskingError as err:
        raise PetDecodeError(f"mask object {part} config at offset {pos}: {err}") from err


def _encode_numbers(values: tuple[int, ...], bpn: int) -> bytes:
    if bpn <= 8:
        try:
            arr = np.array(values, dtype="<u8")
        except OverflowError:
            arr = None
        if arr is not None and (len(arr) == 0 or bpn == 8 or int(arr.max()) < 1 << (8 * bpn)):
            return arr.view(np.uint8).reshape(-1, 8)[:, :bpn].tobytes()
    try:
        return b"".join(v.to_bytes(bpn, "little") for v in values)
    except OverflowError:
        raise MaskingError(
            f"mask object: a number is negative or does not fit {bpn} bytes"
        ) from None


def _decode_numbers(raw: bytes, count: int, bpn: int) -> tuple[int, ...]:
    if bpn <= 8:
        padded = np.zeros((count, 8), np.uint8)
        padded[:, :bpn] = np.frombuffer(raw, np.uint8).reshape(count, bpn)
        return tuple(padded.view("<u8")[:, 0].tolist())
    return tuple(int.from_bytes(raw[i : i + bpn], "little") for i in range(0, len(raw), bpn))
