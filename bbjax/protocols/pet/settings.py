"""PET settings: the coordinator's phase rules and the participant's own settings.

:class:`CoordinatorSettings` mirrors xaynet's server settings (``[pet]``, ``[mask]``,
``[model]``) and checks the same constraints; :class:`ParticipantSettings` mirrors the SDK's
``PetSettings``. Every violation is a :class:`~bbjax.errors.ConfigError` whose ``field``
names the setting at fault (``"sum.count.min"``, ``"max_message_size"``...).
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any

from bbjax.errors import ConfigError, MaskingError
from bbjax.protocols.pet.config import MaskConfig
from bbjax.protocols.pet.crypto import SEALBYTES, SigningKeyPair
from bbjax.protocols.pet.message import CHUNK_HEADER_LENGTH, HEADER_LENGTH
from bbjax.protocols.pet.multipart import DEFAULT_MAX_MESSAGE_SIZE

MIN_MESSAGE_SIZE = HEADER_LENGTH + SEALBYTES + CHUNK_HEADER_LENGTH + 2
"""The smallest ``max_message_size`` (194): a sealed message with room for a chunk of two
payload bytes. xaynet's own minimum is ``header + SEALBYTES + 1`` (185), but its
``MessageEncoder`` refuses payload sizes up to ``CHUNK_HEADER_LENGTH + 1``, so a size
between the two fails at the first send; bbjax refuses it here."""

SUM_COUNT_MIN = 1
UPDATE_COUNT_MIN = 3
MAX_MODEL_LENGTH = 2**32 - 1
"""A mask vector's element count travels as a u32."""


@dataclasses.dataclass(frozen=True)
class Count:
    """How many messages a phase needs (``min``) and accepts at most (``max``)."""

    min: int
    max: int


@dataclasses.dataclass(frozen=True)
class Time:
    """Seconds a phase processes messages at least (``min``) and at most (``max``)."""

    min: float
    max: float


@dataclasses.dataclass(frozen=True)
class SumSettings:
    """The sum phase: selection probability, message counts, time window."""

    prob: float = 0.5
    count: Count = Count(1, 100)
    time: Time = Time(5.0, 3600.0)


@dataclasses.dataclass(frozen=True)
class UpdateSettings:
    """The update phase: selection probability, message counts, time window."""

    prob: float = 0.9
    count: Count = Count(3, 10_000)
    time: Time = Time(10.0, 3600.0)


@dataclasses.dataclass(frozen=True)
class Sum2Settings:
    """The sum2 phase: message counts and time window."""

    count: Count = Count(1, 100)
    time: Time = Time(5.0, 3600.0)


def _default_mask() -> MaskConfig:
    return MaskConfig("Prime", "F32", "B0", "M3")


@dataclasses.dataclass(frozen=True)
class CoordinatorSettings:
    """Everything a coordinator is configured with; defaults are xaynet's.

    Constraints (xaynet's): ``0 < sum.prob < 1``, ``0 < update.prob <= 1``, counts are
    integers with ``sum.count.min >= 1``, ``update.count.min >= 3``, ``sum2.count.min >= 1``,
    ``min <= max``, ``sum2.count.min <= sum.count.max`` and ``sum2.count.max <=
    sum.count.max``; times are finite seconds ``0 <= time.min <= time.max``; ``mask`` is a
    :class:`MaskConfig`; ``1 <= model_length < 2**32``.
    """

    sum: SumSettings = SumSettings()
    update: UpdateSettings = UpdateSettings()
    sum2: Sum2Settings = Sum2Settings()
    mask: MaskConfig = dataclasses.field(default_factory=_default_mask)
    model_length: int = 4

    def __post_init__(self) -> None:
        for name, cls in (("sum", SumSettings), ("update", UpdateSettings),
                          ("sum2", Sum2Settings)):
            phase = getattr(self, name)
            if not isinstance(phase, cls):
                raise ConfigError(f"{name} must be a {cls.__name__}, got {phase!r}", field=name)
            _check_count(phase.count, name)
            _check_time(phase.time, name)
        _check_prob(self.sum.prob, "sum.prob", inclusive_one=False)
        _check_prob(self.update.prob, "update.prob", inclusive_one=True)
        for name, least in (("sum", SUM_COUNT_MIN), ("update", UPDATE_COUNT_MIN),
                            ("sum2", SUM_COUNT_MIN)):
            if getattr(self, name).count.min < least:
                raise ConfigError(f"{name}.count.min must be >= {least}, got "
                                  f"{getattr(self, name).count.min}", field=f"{name}.count.min")
        if self.sum2.count.min > self.sum.count.max:
            raise ConfigError(f"sum2.count.min ({self.sum2.count.min}) must be <= sum.count.max "
                              f"({self.sum.count.max})", field="sum2.count.min")
        if self.sum2.count.max > self.sum.count.max:
            raise ConfigError(f"sum2.count.max ({self.sum2.count.max}) must be <= sum.count.max "
                              f"({self.sum.count.max})", field="sum2.count.max")
        if not isinstance(self.mask, MaskConfig):
            raise ConfigError(f"mask must be a MaskConfig, got {self.mask!r}", field="mask")
        if (not _is_int(self.model_length)
                or not 1 <= self.model_length <= MAX_MODEL_LENGTH):
            raise ConfigError(f"model_length must be an integer in [1, {MAX_MODEL_LENGTH}], got "
                              f"{self.model_length!r}", field="model_length")

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values (mask config by variant names)."""
        def phase(p: Any) -> dict[str, Any]:
            out = {"count": {"min": p.count.min, "max": p.count.max},
                   "time": {"min": p.time.min, "max": p.time.max}}
            if hasattr(p, "prob"):
                out["prob"] = p.prob
            return out
        mask = self.mask
        return {"sum": phase(self.sum), "update": phase(self.update), "sum2": phase(self.sum2),
                "mask": {"group_type": mask.group_type.value, "data_type": mask.data_type.value,
                         "bound_type": mask.bound_type.value,
                         "model_type": mask.model_type.value},
                "model_length": self.model_length}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CoordinatorSettings:
        """Settings from :meth:`to_dict`'s shape; missing entries take the defaults, unknown
        ones are a :class:`ConfigError` naming them."""
        if not isinstance(data, dict):
            raise ConfigError(f"settings must be a dict, got {type(data).__name__}")
        _no_unknown(data, {"sum", "update", "sum2", "mask", "model_length"}, "")
        kwargs: dict[str, Any] = {}
        for name, phase_cls in (("sum", SumSettings), ("update", UpdateSettings),
                                ("sum2", Sum2Settings)):
            if name in data:
                kwargs[name] = _phase_from_dict(phase_cls, data[name], name)
        if "mask" in data:
            mask = data["mask"]
            if not isinstance(mask, dict):
                raise ConfigError("mask must be a dict of variant names", field="mask")
            keys = ("group_type", "data_type", "bound_type", "model_type")
            _no_unknown(mask, set(keys), "mask.")
            default = _default_mask()
            names = {k: mask.get(k, getattr(default, k)) for k in keys}
            try:
                kwargs["mask"] = MaskConfig(**names)
            except MaskingError as err:
                raise ConfigError(f"mask: {err}", field="mask") from err
        if "model_length" in data:
            kwargs["model_length"] = data["model_length"]
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class ParticipantSettings:
    """A participant's own settings (xaynet SDK's ``PetSettings``).

    ``keys`` is its long-term signing identity; ``scalar`` (>= 0, default 1) weights its
    model in the global mean; ``max_message_size`` bounds every sealed message it sends
    (larger payloads are chunked), ``None`` for unbounded, else at least
    :data:`MIN_MESSAGE_SIZE`.
    """

    keys: SigningKeyPair
    scalar: Fraction | float | int = 1
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE

    def __post_init__(self) -> None:
        if not isinstance(self.keys, SigningKeyPair):
            raise ConfigError(f"keys must be a SigningKeyPair, got {type(self.keys).__name__}",
                              field="keys")
        scalar = self.scalar
        if isinstance(scalar, bool) or not isinstance(scalar, (Fraction, float, int)):
            raise ConfigError(f"scalar must be a number, got {scalar!r}", field="scalar")
        if isinstance(scalar, float) and not math.isfinite(scalar):
            raise ConfigError(f"scalar must be finite, got {scalar!r}", field="scalar")
        if scalar < 0:
            raise ConfigError(f"scalar must be >= 0, got {scalar!r}", field="scalar")
        object.__setattr__(self, "scalar", Fraction(scalar))
        size = self.max_message_size
        if size is not None and (not _is_int(size) or size < MIN_MESSAGE_SIZE):
            raise ConfigError(f"max_message_size must be None or an integer >= "
                              f"{MIN_MESSAGE_SIZE}, got {size!r}", field="max_message_size")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_count(count: Any, phase: str) -> None:
    if not isinstance(count, Count):
        raise ConfigError(f"{phase}.count must be a Count, got {count!r}", field=f"{phase}.count")
    for bound in ("min", "max"):
        value = getattr(count, bound)
        if not _is_int(value) or value < 0:
            raise ConfigError(f"{phase}.count.{bound} must be a non-negative integer, got "
                              f"{value!r}", field=f"{phase}.count.{bound}")
    if count.min > count.max:
        raise ConfigError(f"{phase}.count.min ({count.min}) must be <= {phase}.count.max "
                          f"({count.max})", field=f"{phase}.count.min")


def _check_time(time: Any, phase: str) -> None:
    if not isinstance(time, Time):
        raise ConfigError(f"{phase}.time must be a Time, got {time!r}", field=f"{phase}.time")
    for bound in ("min", "max"):
        value = getattr(time, bound)
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value < 0):
            raise ConfigError(f"{phase}.time.{bound} must be finite seconds >= 0, got "
                              f"{value!r}", field=f"{phase}.time.{bound}")
    if time.min > time.max:
        raise ConfigError(f"{phase}.time.min ({time.min}) must be <= {phase}.time.max "
                          f"({time.max})", field=f"{phase}.time.min")


def _check_prob(prob: Any, field: str, *, inclusive_one: bool) -> None:
    ok = (not isinstance(prob, bool) and isinstance(prob, (int, float)) and math.isfinite(prob)
          and 0 < prob and (prob <= 1 if inclusive_one else prob < 1))
    if not ok:
        allowed = "0 < p <= 1" if inclusive_one else "0 < p < 1"
        raise ConfigError(f"{field} must satisfy {allowed}, got {prob!r}", field=field)


def _no_unknown(data: dict[str, Any], known: set[str], prefix: str) -> None:
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise ConfigError(f"unknown setting {prefix}{unknown[0]}", field=prefix + unknown[0])


def _phase_from_dict(cls: type, data: Any, name: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{name} must be a dict", field=name)
    known = {"count", "time"} | ({"prob"} if cls is not Sum2Settings else set())
    _no_unknown(data, known, f"{name}.")
    default = cls()
    kwargs: dict[str, Any] = {}
    for part, part_cls in (("count", Count), ("time", Time)):
        given = data.get(part, {})
        if not isinstance(given, dict):
            raise ConfigError(f"{name}.{part} must be a dict", field=f"{name}.{part}")
        _no_unknown(given, {"min", "max"}, f"{name}.{part}.")
        base = getattr(default, part)
        kwargs[part] = part_cls(given.get("min", base.min), given.get("max", base.max))
    if "prob" in data:
        kwargs["prob"] = data["prob"]
    return cls(**kwargs)
