"""Strict reading of the JSON state bytes the PET state machines save.

State bytes are canonical JSON (sorted keys, no spaces) of plain values, byte strings as
hex. :class:`Fields` reads one JSON object and raises :class:`PetDecodeError` naming the
field for anything missing, extra, of the wrong type or out of range.
"""

from __future__ import annotations

import json
import math
from typing import Any

from bbjax.errors import PetDecodeError


def dump(obj: dict[str, Any]) -> bytes:
    """Canonical JSON bytes of ``obj``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def load(data: bytes, what: str, fmt: str) -> Fields:
    """The top-level object of ``what``'s state bytes, whose ``format`` must be ``fmt``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PetDecodeError(f"{what} state must be bytes, got {type(data).__name__}")
    try:
        obj = json.loads(bytes(data), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise PetDecodeError(f"{what} state is not JSON: {err}") from None
    fields = Fields(obj, what)
    if fields.str("format") != fmt:
        raise PetDecodeError(f"{what} state has format {obj.get('format')!r}, expected {fmt!r}")
    return fields


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def hexed(data: bytes | None) -> str | None:
    """``data`` as hex (``None`` stays ``None``)."""
    return None if data is None else data.hex()


class Fields:
    """The fields of one JSON object, each read once by a typed getter."""

    def __init__(self, obj: Any, where: str):
        if not isinstance(obj, dict):
            raise PetDecodeError(f"{where}: expected an object, got {type(obj).__name__}")
        self.obj, self.where = obj, where

    def _get(self, name: str) -> Any:
        if name not in self.obj:
            raise PetDecodeError(f"{self.where}: field {name!r} missing")
        return self.obj[name]

    def fail(self, name: str, why: str) -> PetDecodeError:
        """The error for a bad field."""
        return PetDecodeError(f"{self.where}.{name}: {why}")

    def str(self, name: str) -> str:
        value = self._get(name)
        if not isinstance(value, str):
            raise self.fail(name, f"expected a string, got {value!r}")
        return value

    def int(self, name: str, lo: int = 0, hi: int | None = None) -> int:
        value = self._get(name)
        if (isinstance(value, bool) or not isinstance(value, int) or value < lo
                or (hi is not None and value > hi)):
            raise self.fail(name, f"expected an integer in [{lo}, {hi}], got {value!r}")
        return value

    def float(self, name: str) -> float:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(name, f"expected a finite number, got {value!r}")
        return float(value)

    def bool(self, name: str) -> bool:
        value = self._get(name)
        if not isinstance(value, bool):
            raise self.fail(name, f"expected true or false, got {value!r}")
        return value

    def bytes(self, name: str, length: int | None = None, *, optional: bool = False) -> Any:
        value = self._get(name)
        if value is None and optional:
            return None
        return to_bytes(value, f"{self.where}.{name}", length)

    def list(self, name: str) -> list[Any]:
        value = self._get(name)
        if not isinstance(value, list):
            raise self.fail(name, f"expected a list, got {type(value).__name__}")
        return value

    def object(self, name: str, *, optional: bool = False) -> Fields | None:
        value = self._get(name)
        if value is None and optional:
            return None
        return Fields(value, f"{self.where}.{name}")

    def done(self, *names: str) -> None:
        """Refuse fields other than ``names``."""
        extra = sorted(set(self.obj) - set(names))
        if extra:
            raise PetDecodeError(f"{self.where}: unknown field {extra[0]!r}")


def to_bytes(value: Any, where: str, length: int | None = None) -> bytes:
    """Hex ``value`` as bytes (of ``length``, when given)."""
    if not isinstance(value, str):
        raise PetDecodeError(f"{where}: expected hex, got {type(value).__name__}")
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise PetDecodeError(f"{where}: not hex") from None
    if data.hex() != value:
        raise PetDecodeError(f"{where}: not canonical lowercase hex")
    if length is not None and len(data) != length:
        raise PetDecodeError(f"{where}: expected {length} bytes, got {len(data)}")
    return data


def pairs(items: list[Any], where: str, key_length: int, value_length: int | None
          ) -> dict[bytes, bytes]:
    """A dict from a sorted list of ``[key_hex, value_hex]`` pairs."""
    out: dict[bytes, bytes] = {}
    for i, item in enumerate(items):
        if not isinstance(item, list) or len(item) != 2:
            raise PetDecodeError(f"{where}[{i}]: expected a [key, value] pair")
        key = to_bytes(item[0], f"{where}[{i}][0]", key_length)
        if out and key <= next(reversed(out)):
            raise PetDecodeError(f"{where}[{i}]: keys not strictly increasing")
        out[key] = to_bytes(item[1], f"{where}[{i}][1]", value_length)
    return out


def sorted_pairs(mapping: dict[bytes, bytes]) -> list[list[str]]:
    """The inverse of :func:`pairs`."""
    return [[k.hex(), v.hex()] for k, v in sorted(mapping.items())]
