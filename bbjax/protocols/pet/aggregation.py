"""Aggregating mask objects and unmasking the aggregate (xaynet's ``Aggregation``).

Aggregation adds objects element-wise modulo the group orders and counts them. Unmasking
``nb`` aggregated masked models with the aggregate of their masks gives, per weight,
``(n / E - nb B) / (n_1 / E1 - nb B1)`` with ``n = (masked - mask) mod q``: the weighted mean
``sum_j s_j w_j / sum_j s_j`` of the models, to about ``nb / E``.

Failures raise :class:`AggregationError`; its message names xaynet's error variant
(``ModelMismatch``, ``ScalarMismatch``, ``TooManyModels``, ``TooManyScalars``,
``InvalidObject``; for unmasking ``NoModel``, ``MaskManyMismatch``, ``MaskOneMismatch``,
``InvalidMask``).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from bbjax.errors import AggregationError, MaskingError
from bbjax.protocols.pet.config import MaskConfigPair
from bbjax.protocols.pet.object import MaskObject, MaskUnit, MaskVect


class Aggregation:
    """A running modular sum of ``nb_models`` mask objects of one config and length."""

    def __init__(self, config: MaskConfigPair, length: int):
        if not isinstance(config, MaskConfigPair):
            raise MaskingError(f"mask config: expected a MaskConfigPair, got {type(config).__name__}")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise MaskingError(f"aggregation length must be a non-negative integer, got {length!r}")
        self.config = config
        self.length = length
        self._nb_models = 0
        # xaynet's empty aggregate: no vector elements and a unit of 1, replaced by the
        # first object aggregated
        self._object = MaskObject(MaskVect(config.vect, ()), MaskUnit(config.unit, 1))

    @classmethod
    def resume(cls, config: MaskConfigPair, length: int, aggregate: MaskObject | None,
               nb_models: int) -> Aggregation:
        """An aggregation already holding ``aggregate`` as the sum of ``nb_models`` objects
        (e.g. restored from storage); ``aggregate`` is checked as :meth:`aggregate` would."""
        aggregation = cls(config, length)
        if isinstance(nb_models, bool) or not isinstance(nb_models, int) or nb_models < 0:
            raise AggregationError(f"nb_models must be a non-negative integer, got {nb_models!r}")
        if nb_models:
            if nb_models > config.vect.max_nb_models or nb_models > config.unit.max_nb_models:
                raise AggregationError(f"TooManyModels: {nb_models} models aggregated")
            aggregation.validate_aggregation(aggregate)
            aggregation._object, aggregation._nb_models = aggregate, nb_models
        return aggregation

    @property
    def nb_models(self) -> int:
        """How many objects have been aggregated."""
        return self._nb_models

    def masked_object(self) -> MaskObject:
        """The current aggregate (xaynet's empty object while ``nb_models`` is 0)."""
        return self._object

    def validate_aggregation(self, obj: MaskObject) -> None:
        """Raise :class:`AggregationError` unless ``obj`` may be aggregated: same configs and
        length, fewer than ``max_nb_models`` aggregated so far, every element in its group."""
        if not isinstance(obj, MaskObject):
            raise AggregationError(f"InvalidObject: expected a MaskObject, got {type(obj).__name__}")
        if obj.vect.config != self.config.vect:
            raise AggregationError(
                f"ModelMismatch: the object's vector config {obj.vect.config} differs from the "
                f"aggregation's {self.config.vect}"
            )
        if obj.unit.config != self.config.unit:
            raise AggregationError(
                f"ScalarMismatch: the object's unit config {obj.unit.config} differs from the "
                f"aggregation's {self.config.unit}"
            )
        if len(obj.vect.data) != self.length:
            raise AggregationError(
                f"ModelMismatch: the object has {len(obj.vect.data)} elements, the aggregation "
                f"{self.length}"
            )
        if self._nb_models >= self.config.vect.max_nb_models:
            raise AggregationError(
                f"TooManyModels: {self._nb_models} models aggregated, the vector config allows "
                f"{self.config.vect.max_nb_models}"
            )
        if self._nb_models >= self.config.unit.max_nb_models:
            raise AggregationError(
                f"TooManyScalars: {self._nb_models} scalars aggregated, the unit config allows "
                f"{self.config.unit.max_nb_models}"
            )
        if not obj.is_valid():
            raise AggregationError("InvalidObject: an element is not below its group order")

    def aggregate(self, obj: MaskObject) -> None:
        """Validate ``obj`` (:meth:`validate_aggregation`) and add it to the aggregate."""
        self.validate_aggregation(obj)
        if self._nb_models == 0:
            self._object = obj
        else:
            q, q1 = self.config.vect.order, self.config.unit.order
            data = tuple((a + b) % q for a, b in zip(self._object.vect.data, obj.vect.data))
            unit = (self._object.unit.value + obj.unit.value) % q1
            self._object = MaskObject(
                MaskVect(self.config.vect, data), MaskUnit(self.config.unit, unit)
            )
        self._nb_models += 1

    def validate_unmasking(self, mask: MaskObject) -> None:
        """Raise :class:`AggregationError` unless ``mask`` may unmask the aggregate: at least
        one and at most ``max_nb_models`` aggregated, same configs and length, mask valid."""
        if not isinstance(mask, MaskObject):
            raise AggregationError(f"InvalidMask: expected a MaskObject, got {type(mask).__name__}")
        if self._nb_models == 0:
            raise AggregationError("NoModel: there is no aggregated model to unmask")
        if self._nb_models > self.config.vect.max_nb_models:
            raise AggregationError(f"TooManyModels: {self._nb_models} models aggregated")
        if self._nb_models > self.config.unit.max_nb_models:
            raise AggregationError(f"TooManyScalars: {self._nb_models} scalars aggregated")
        if mask.vect.config != self.config.vect or len(mask.vect.data) != self.length:
            raise AggregationError(
                f"MaskManyMismatch: the mask's vector part ({mask.vect.config}, "
                f"{len(mask.vect.data)} elements) does not fit the aggregate "
                f"({self.config.vect}, {self.length} elements)"
            )
        if mask.unit.config != self.config.unit:
            raise AggregationError(
                f"MaskOneMismatch: the mask's unit config {mask.unit.config} differs from the "
                f"aggregate's {self.config.unit}"
            )
        if not mask.is_valid():
            raise AggregationError("InvalidMask: a mask element is not below its group order")

    def _unmasked(self, mask: MaskObject) -> tuple[list[int], int]:
        """Exact numerators of the unmasked weights over one common denominator."""
        self.validate_unmasking(mask)
        vect, unit, nb = self.config.vect, self.config.unit, self._nb_models
        b, e, q = vect.add_shift, vect.exp_shift, vect.order
        b1, e1, q1 = unit.add_shift, unit.exp_shift, unit.order
        # scalar sum = n1 / E1 - nb B1 = scalar_num / (E1 * b1.denominator)
        n1 = (self._object.unit.value - mask.unit.value) % q1
        scalar_num = n1 * b1.denominator - nb * b1.numerator * e1
        if scalar_num == 0:
            raise AggregationError("the unmasked scalar sum is 0: there is no weighted mean")
        # weight = (n / E - nb B) / scalar sum
        offset = nb * b.numerator * e
        scale = e1 * b1.denominator
        numerators = [
            ((a - m) % q * b.denominator - offset) * scale
            for a, m in zip(self._object.vect.data, mask.vect.data)
        ]
        return numerators, e * b.denominator * scalar_num

    def unmask_exact(self, mask: MaskObject) -> list[Fraction]:
        """The unmasked weighted mean as exact rationals (xaynet's ``unmask``)."""
        numerators, denominator = self._unmasked(mask)
        return [Fraction(n, denominator) for n in numerators]

    def unmask(self, mask: MaskObject) -> np.ndarray:
        """The unmasked weighted mean, each weight correctly rounded to float64."""
        numerators, denominator = self._unmasked(mask)
        try:
            return np.array([n / denominator for n in numerators], dtype=np.float64)
        except OverflowError:
            raise AggregationError(
                "an unmasked weight is outside the float64 range (use unmask_exact)"
            ) from None
