"""The machinery of :mod:`bbjax.strategies.config`: checks that convert a JSON value or
raise :class:`~bbjax.errors.ConfigError` naming its JSON path, and :class:`Config`, the
base of the frozen configurations (each field checked by ``SPEC``, written with its serde
``TAG``)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from bbjax.errors import ConfigError

Check = Callable[[Any, str], Any]

MAX_COUNT = 2**31 - 1
"""The largest count (clients, replicas, rounds, ...) a configuration takes."""

def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _where(path: str) -> str:
    return path or "the strategy"


def error(path: str, text: str) -> ConfigError:
    return ConfigError(f"{_where(path)} {text}", field=path or "$")


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def integer(low: int, high: int = MAX_COUNT) -> Check:
    def check(value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
                or not low <= value <= high:
            raise error(path, f"must be an integer in [{low}, {high}], got {show(value)}")
        return int(value)
    return check


def _finite(value: numbers.Real) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def real(low: float, high: float = math.inf, *, low_open: bool = False,
         high_open: bool = False) -> Check:
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def check(value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not _finite(value) or value < low or value > high \
                or (low_open and value == low) or (high_open and value == high):
            raise error(path, f"must be a finite number in {interval}, got {show(value)}")
        return float(value)
    return check


def choice(choices: tuple[str, ...]) -> Check:
    def check(value: Any, path: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise error(path, f"must be one of {', '.join(map(repr, choices))}, got "
                              f"{show(value)}")
        return value
    return check


def nonempty_text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise error(path, f"must be a non-empty string, got {show(value)}")
    return value


def optional(check: Check) -> Check:
    return lambda value, path: None if value is None else check(value, path)


def list_of(item: Check, *, non_empty: bool = False, distinct: bool = False) -> Check:
    def check(value: Any, path: str) -> tuple:
        if not isinstance(value, (list, tuple)) or (non_empty and not value):
            raise error(path, f"must be a {'non-empty ' if non_empty else ''}list, got "
                              f"{show(value)}")
        items = tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))
        if distinct:
            for i, v in enumerate(items):
                if v in items[:i]:
                    raise error(f"{path}[{i}]", f"repeats {v!r}")
        return items
    return check


def json_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise error(path, f"must be a JSON object, got {show(value)}")
    return value


def one_of(*classes: type[Config]) -> Check:
    """The check of a field holding one of ``classes`` (all tagged by the same key): an
    instance as it is, or its JSON object."""
    key = classes[0].TAG[0]
    by_name = {cls.TAG[1]: cls for cls in classes}

    def check(value: Any, path: str) -> Config:
        if isinstance(value, classes):
            return value
        fields = json_object(value, path)
        if key not in fields:
            raise error(join(path, key), f"is missing (one of {', '.join(by_name)})")
        name = fields[key]
        if not isinstance(name, str) or name not in by_name:
            raise error(join(path, key), f"must be one of {', '.join(map(repr, by_name))}, "
                                         f"got {show(name)}")
        return by_name[name].from_json(value, path)
    return check


class Config:
    """A frozen configuration: ``SPEC`` checks each field (by the field's JSON path),
    ``TAG`` is the serde tag (key, name) it is written with."""

    TAG: ClassVar[tuple[str, str] | None] = None
    SPEC: ClassVar[dict[str, Check]] = {}

    def __post_init__(self, _path: str) -> None:
        for name, check in self.SPEC.items():
            object.__setattr__(self, name, check(getattr(self, name), join(_path, name)))
        self._check_together(_path)

    def _check_together(self, path: str) -> None:
        """Checks across fields (the JSON path of this object is ``path``)."""

    @classmethod
    def from_json(cls, value: Any, path: str = "") -> Any:
        """The configuration the JSON object ``value`` (at ``path``) describes."""
        fields = dict(json_object(value, path))
        if cls.TAG is not None:
            fields.pop(cls.TAG[0], None)
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(fields) - set(known))
        if unknown:
            raise error(join(path, unknown[0]), f"is not a field of {cls.__name__}; its "
                                                f"fields: {', '.join(known) or 'none'}")
        for f in dataclasses.fields(cls):
            if f.name not in fields and f.default is dataclasses.MISSING \
                    and f.default_factory is dataclasses.MISSING:
                raise error(join(path, f.name), "is missing")
        return cls(**fields, _path=path)

    def to_json(self) -> dict[str, Any]:
        """The JSON object (serde tag first; unset optional fields left out)."""
        out: dict[str, Any] = {self.TAG[0]: self.TAG[1]} if self.TAG else {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = _to_json(value)
        return out


def _to_json(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_json()
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


def frozen(cls: type) -> type:
    """``cls`` as a frozen dataclass (a configuration class)."""
    return dataclass(frozen=True)(cls)
