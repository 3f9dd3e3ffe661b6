"""Masking a model (xaynet's ``Masker``), exactly, in Python integers.

With vector config (B, E, q) and unit config (B1, E1, q1), a scalar ``s >= 0`` and weights
``w_i`` (exact rationals of their ``data_type`` values)::

    s' = min(s, B1)
    masked_i = (floor((clamp(s' w_i, -B, B) + B) E) + r_i) mod q
    masked_s = (floor((s' + B1) E1) + r_0) mod q1

where ``r_0, r_1, ...`` is the mask ``seed.derive_mask`` derives (unit element first).
The mask objects, seed and aggregation are re-exported here.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from bbjax.errors import MaskingError
from bbjax.protocols.pet.aggregation import Aggregation
from bbjax.protocols.pet.config import DataType, MaskConfigPair
from bbjax.protocols.pet.object import MaskObject, MaskUnit, MaskVect
from bbjax.protocols.pet.seed import MaskSeed

__all__ = [
    "Aggregation", "MaskObject", "MaskSeed", "MaskUnit", "MaskVect", "Masker", "scalar_ratio",
    "weight_ratios",
]

_FLOATS = {DataType.F32: np.float32, DataType.F64: np.float64}
_INTS = {DataType.I32: np.int32, DataType.I64: np.int64}


def scalar_ratio(scalar: numbers.Real) -> Fraction:
    """The exact value of a finite, non-negative scalar (int, float or rational)."""
    if isinstance(scalar, (bool, np.bool_)) or not isinstance(scalar, (numbers.Real, np.number)):
        raise MaskingError(f"scalar must be a non-negative real number, got {scalar!r}")
    if isinstance(scalar, (float, np.floating)) and not np.isfinite(scalar):
        raise MaskingError(f"scalar must be finite, got {scalar!r}")
    value = Fraction(float(scalar)) if isinstance(scalar, np.floating) else Fraction(scalar)
    if value < 0:
        raise MaskingError(f"scalar must be non-negative, got {scalar!r}")
    return value


def weight_ratios(weights: Sequence[float] | np.ndarray, data_type: DataType,
                  bounded: bool = False) -> list[tuple[int, int]]:
    """Each weight as an exact ``(numerator, denominator)`` of its ``data_type`` value.

    Floats are first rounded to the data type (F32: float32); non-finite ones raise
    :class:`MaskingError` unless ``bounded``, which maps NaN to 0 and +-inf to the type's
    extremes (xaynet's ``from_primitives_bounded``). I32/I64 weights must be integers, or
    integral floats, in the type's range.
    """
    try:
        arr = np.asarray(weights)
    except (ValueError, TypeError) as err:
        raise MaskingError(f"weights: not a numeric vector ({err})") from None
    if arr.ndim != 1 or arr.dtype.kind not in "iuf":
        raise MaskingError(
            f"weights must be a 1-D vector of ints or floats, got shape {arr.shape} "
            f"dtype {arr.dtype}"
        )
    if data_type in _FLOATS:
        kind = _FLOATS[data_type]
        with np.errstate(over="ignore"):
            values = arr.astype(kind)
        bad = ~np.isfinite(values)
        if bad.any():
            if not bounded:
                i = int(np.flatnonzero(bad)[0])
                raise MaskingError(
                    f"weights[{i}] = {arr[i]!r} is not finite as {data_type.value} "
                    "(pass bounded=True to clamp non-finite weights)"
                )
            top = np.finfo(kind).max
            values = np.nan_to_num(values, nan=0.0, posinf=top, neginf=-top)
        return [v.as_integer_ratio() for v in values.tolist()]
    info = np.iinfo(_INTS[data_type])
    if arr.dtype.kind == "f":
        integral = np.isfinite(arr) & (np.floor(arr) == arr)
        if not integral.all():
            i = int(np.flatnonzero(~integral)[0])
            raise MaskingError(f"weights[{i}] = {arr[i]!r} is not an integer ({data_type.value})")
        ints = [int(v) for v in arr.tolist()]
    else:
        ints = arr.tolist()
    for i, v in enumerate(ints):
        if not info.min <= v <= info.max:
            raise MaskingError(f"weights[{i}] = {v} is outside the range of {data_type.value}")
    return [(v, 1) for v in ints]


class Masker:
    """Masks models under one :class:`MaskConfigPair` (xaynet's ``Masker``)."""

    def __init__(self, config: MaskConfigPair):
        if not isinstance(config, MaskConfigPair):
            raise MaskingError(f"mask config: expected a MaskConfigPair, got {type(config).__name__}")
        self.config = config

    def mask(self, scalar: numbers.Real, weights: Sequence[float] | np.ndarray,
             seed: MaskSeed | None = None, bounded: bool = False) -> tuple[MaskSeed, MaskObject]:
        """Mask ``scalar * weights``; returns the seed (fresh unless given) and the masked
        object. ``bounded`` clamps non-finite float weights instead of refusing them."""
        if seed is None:
            seed = MaskSeed.generate()
        elif not isinstance(seed, MaskSeed):
            raise MaskingError(f"seed: expected a MaskSeed, got {type(seed).__name__}")
        vect_config, unit_config = self.config.vect, self.config.unit
        ratios = weight_ratios(weights, vect_config.data_type, bounded)
        s = min(scalar_ratio(scalar), unit_config.add_shift)
        mask = seed.derive_mask(len(ratios), self.config)

        b, e, q = vect_config.add_shift, vect_config.exp_shift, vect_config.order
        sn, sd, bn, bd = s.numerator, s.denominator, b.numerator, b.denominator
        top = 2 * bn * e // bd  # floor((B + B) E), a weight clamped at B
        masked = []
        for (wn, wd), r in zip(ratios, mask.vect.data):
            num, den = sn * wn * bd, sd * wd * bd  # s' w = num / den, over B's denominator
            if num >= bn * sd * wd:
                shifted = top
            elif num <= -bn * sd * wd:
                shifted = 0
            else:
                shifted = (num + bn * sd * wd) * e // den
            masked.append((shifted + r) % q)

        b1, e1, q1 = unit_config.add_shift, unit_config.exp_shift, unit_config.order
        shifted_s = (s + b1) * e1
        unit = (shifted_s.numerator // shifted_s.denominator + mask.unit.value) % q1
        return seed, MaskObject(MaskVect(vect_config, tuple(masked)), MaskUnit(unit_config, unit))
