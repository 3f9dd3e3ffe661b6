"""xaynet's mask configuration: the finite group, value bounds and precision of masking.

A :class:`MaskConfig` names one of xaynet's 240 catalogued configurations by its four
variant names; its properties are exactly those of xaynet's ``MaskConfig`` (``order`` from
xaynet's hard-coded table) and its wire form is 4 bytes, one code per field.
"""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeVar

import numpy as np

from bbjax.errors import MaskingError
from bbjax.protocols.pet._orders import ORDERS


class _Variant(enum.StrEnum):
    """A str Enum whose values are xaynet's variant names, each with its wire byte."""

    @property
    def code(self) -> int:
        """The variant's byte in the 4-byte wire form of a :class:`MaskConfig`."""
        return _CODES[type(self)][self]

    @classmethod
    def from_code(cls, byte: int, field: str | None = None) -> _Variant:
        """The variant whose wire byte is ``byte``; a :class:`MaskingError` otherwise."""
        for variant, code in _CODES[cls].items():
            if code == byte:
                return variant
        allowed = ", ".join(f"{c} ({v.value})" for v, c in _CODES[cls].items())
        raise MaskingError(
            f"mask config {field or cls.__name__}: unknown byte {byte!r}; expected one of {allowed}"
        )


class GroupType(_Variant):
    """The order of the finite group the masked values live in."""

    Integer = "Integer"
    Prime = "Prime"
    Power2 = "Power2"


class DataType(_Variant):
    """The primitive type of the values to mask."""

    F32 = "F32"
    F64 = "F64"
    I32 = "I32"
    I64 = "I64"


class BoundType(_Variant):
    """The absolute bound of the values to mask: 1, 100, 10^4, 10^6 or the type's maximum."""

    B0 = "B0"
    B2 = "B2"
    B4 = "B4"
    B6 = "B6"
    Bmax = "Bmax"


class ModelType(_Variant):
    """The maximum number of masked models that may be aggregated: 10^3, 10^6, 10^9, 10^12."""

    M3 = "M3"
    M6 = "M6"
    M9 = "M9"
    M12 = "M12"


_CODES: dict[type, dict[_Variant, int]] = {
    GroupType: {GroupType.Integer: 0, GroupType.Prime: 1, GroupType.Power2: 2},
    DataType: {DataType.F32: 0, DataType.F64: 1, DataType.I32: 2, DataType.I64: 3},
    BoundType: {
        BoundType.B0: 0,
        BoundType.B2: 2,
        BoundType.B4: 4,
        BoundType.B6: 6,
        BoundType.Bmax: 255,
    },
    ModelType: {ModelType.M3: 3, ModelType.M6: 6, ModelType.M9: 9, ModelType.M12: 12},
}

_BOUNDS = {BoundType.B0: 1, BoundType.B2: 100, BoundType.B4: 10_000, BoundType.B6: 1_000_000}
# Bmax: the data type's largest magnitude, exactly (f32::MAX and f64::MAX are integers).
_TYPE_MAX = {
    DataType.F32: int(np.finfo(np.float32).max),
    DataType.F64: int(sys.float_info.max),
    DataType.I32: 2**31,
    DataType.I64: 2**63,
}

_V = TypeVar("_V", bound=_Variant)


def _variant(kind: type[_V], value: object, field: str) -> _V:
    if isinstance(value, kind):
        return value
    if isinstance(value, str) and not isinstance(value, _Variant):
        try:
            return kind(value)
        except ValueError:
            pass
    allowed = ", ".join(v.value for v in kind)
    raise MaskingError(f"mask config {field}: unknown variant {value!r}; expected one of {allowed}")


@dataclass(frozen=True)
class MaskConfig:
    """One of xaynet's mask configurations; fields take enums or their variant names."""

    group_type: GroupType
    data_type: DataType
    bound_type: BoundType
    model_type: ModelType

    def __post_init__(self) -> None:
        for field, kind in _FIELDS:
            object.__setattr__(self, field, _variant(kind, getattr(self, field), field))

    @property
    def order(self) -> int:
        """The order of the finite group (xaynet's table)."""
        return ORDERS[(self.group_type, self.data_type, self.bound_type, self.model_type)]

    @property
    def bytes_per_number(self) -> int:
        """Bytes of one group element on the wire: ``ceil(bits(order - 1) / 8)``."""
        return ((self.order - 1).bit_length() + 7) // 8

    @property
    def add_shift(self) -> Fraction:
        """The bound B: values are clamped to ``[-B, B]`` and shifted by ``B`` to be >= 0."""
        if self.bound_type is BoundType.Bmax:
            return Fraction(_TYPE_MAX[self.data_type])
        return Fraction(_BOUNDS[self.bound_type])

    @property
    def exp_shift(self) -> int:
        """The scale E: a shifted value ``v`` becomes the integer ``floor(v * E)``."""
        if self.data_type is DataType.F32:
            return 10**45 if self.bound_type is BoundType.Bmax else 10**10
        if self.data_type is DataType.F64:
            return 10**324 if self.bound_type is BoundType.Bmax else 10**20
        return 10**10

    @property
    def max_nb_models(self) -> int:
        """How many masked models may be aggregated: ``10 ** model_type.code``."""
        return 10**self.model_type.code

    def to_bytes(self) -> bytes:
        """The 4-byte wire form: group, data, bound and model type codes."""
        return bytes(getattr(self, field).code for field, _ in _FIELDS)

    @classmethod
    def from_bytes(cls, data: bytes) -> MaskConfig:
        """Parse the 4-byte wire form; a :class:`MaskingError` names a bad field or length."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MaskingError(f"mask config: expected 4 bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) != 4:
            raise MaskingError(f"mask config: expected 4 bytes, got {len(data)}")
        return cls(*(kind.from_code(b, field) for (field, kind), b in zip(_FIELDS, data)))


_FIELDS: tuple[tuple[str, type[_Variant]], ...] = (
    ("group_type", GroupType),
    ("data_type", DataType),
    ("bound_type", BoundType),
    ("model_type", ModelType),
)


@dataclass(frozen=True)
class MaskConfigPair:
    """The configurations of a mask object's vector part (the model) and unit part (the
    scalar)."""

    vect: MaskConfig
    unit: MaskConfig

    def __post_init__(self) -> None:
        for field in ("vect", "unit"):
            if not isinstance(getattr(self, field), MaskConfig):
                raise MaskingError(
                    f"mask config pair {field}: expected a MaskConfig, "
                    f"got {type(getattr(self, field)).__name__}"
                )

    @classmethod
    def from_config(cls, config: MaskConfig) -> MaskConfigPair:
        """Both parts with the same configuration (xaynet's ``From<MaskConfig>``)."""
        return cls(config, config)
