"""PET settings: xaynet's defaults and every constraint, each violation a ConfigError naming
its field."""

import dataclasses
from fractions import Fraction

import pytest

from bbjax.errors import ConfigError
from bbjax.protocols.pet.config import MaskConfig
from bbjax.protocols.pet.crypto import SigningKeyPair
from bbjax.protocols.pet.settings import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MIN_MESSAGE_SIZE,
    CoordinatorSettings,
    Count,
    ParticipantSettings,
    Sum2Settings,
    SumSettings,
    Time,
    UpdateSettings,
)

KEYS = SigningKeyPair.from_seed(bytes(range(32)))


def test_defaults_are_xaynets():
    s = CoordinatorSettings()
    assert (s.sum.prob, s.sum.count, s.sum.time) == (0.5, Count(1, 100), Time(5, 3600))
    assert (s.update.prob, s.update.count, s.update.time) == (0.9, Count(3, 10_000),
                                                              Time(10, 3600))
    assert (s.sum2.count, s.sum2.time) == (Count(1, 100), Time(5, 3600))
    assert s.mask == MaskConfig("Prime", "F32", "B0", "M3")
    assert s.model_length == 4
    p = ParticipantSettings(KEYS)
    assert p.scalar == 1 and isinstance(p.scalar, Fraction)
    assert p.max_message_size == DEFAULT_MAX_MESSAGE_SIZE == 4096 - 136 - 48


def _with(**changes):
    base = CoordinatorSettings()
    phases = {"sum": base.sum, "update": base.update, "sum2": base.sum2}
    top = {}
    for key, value in changes.items():
        head, _, rest = key.partition("__")
        if head in phases and not rest:
            phases[head] = value
        elif head in phases:
            part, _, bound = rest.partition("__")
            if bound:
                inner = dataclasses.replace(getattr(phases[head], part), **{bound: value})
                phases[head] = dataclasses.replace(phases[head], **{part: inner})
            else:
                phases[head] = dataclasses.replace(phases[head], **{part: value})
        else:
            top[key] = value
    return lambda: CoordinatorSettings(**phases, **top)


@pytest.mark.parametrize("changes, field", [
    ({"sum__prob": 0.0}, "sum.prob"),
    ({"sum__prob": 1.0}, "sum.prob"),
    ({"sum__prob": -0.1}, "sum.prob"),
    ({"sum__prob": float("nan")}, "sum.prob"),
    ({"sum__prob": True}, "sum.prob"),
    ({"update__prob": 0.0}, "update.prob"),
    ({"update__prob": 1.0000001}, "update.prob"),
    ({"update__prob": float("inf")}, "update.prob"),
    ({"sum__count__min": 0}, "sum.count.min"),
    ({"update__count__min": 2}, "update.count.min"),
    ({"sum2__count__min": 0}, "sum2.count.min"),
    ({"sum__count__min": 5, "sum__count__max": 4}, "sum.count.min"),
    ({"update__count__min": 11, "update__count__max": 10}, "update.count.min"),
    ({"sum2__count__min": 7, "sum2__count__max": 6}, "sum2.count.min"),
    ({"sum__count__max": 10, "sum2__count__min": 11, "sum2__count__max": 11}, "sum2.count.min"),
    ({"sum__count__max": 10, "sum2__count__max": 11}, "sum2.count.max"),
    ({"sum__count__max": 2.0}, "sum.count.max"),
    ({"update__count__max": -1}, "update.count.max"),
    ({"sum__time__min": 10, "sum__time__max": 9}, "sum.time.min"),
    ({"update__time__min": 11, "update__time__max": 10}, "update.time.min"),
    ({"sum2__time__min": 6, "sum2__time__max": 5}, "sum2.time.min"),
    ({"sum__time__max": float("inf")}, "sum.time.max"),
    ({"sum2__time__min": -1}, "sum2.time.min"),
    ({"update__count": (3, 10)}, "update.count"),
    ({"sum": "fast"}, "sum"),
    ({"mask": ("Prime", "F32", "B0", "M3")}, "mask"),
    ({"model_length": 0}, "model_length"),
    ({"model_length": 2**32}, "model_length"),
    ({"model_length": 4.0}, "model_length"),
])
def test_every_constraint_names_its_field(changes, field):
    with pytest.raises(ConfigError) as info:
        _with(**changes)()
    assert info.value.field == field
    assert field.split(".")[-1] in str(info.value)


@pytest.mark.parametrize("changes", [
    {"update__prob": 1.0},
    {"sum__count__min": 1, "sum__count__max": 1, "sum2__count__min": 1, "sum2__count__max": 1},
    {"sum__time__min": 0, "sum__time__max": 0},
    {"update__count__min": 3, "update__count__max": 3},
    {"model_length": 1},
    {"model_length": 2**32 - 1},
    {"mask": MaskConfig("Power2", "I64", "Bmax", "M12")},
])
def test_boundary_values_are_allowed(changes):
    _with(**changes)()


def test_settings_round_trip_through_dicts_and_refuse_unknown_entries():
    s = CoordinatorSettings(SumSettings(0.25, Count(2, 8), Time(1.5, 20)),
                            UpdateSettings(1.0, Count(3, 30), Time(2, 40)),
                            Sum2Settings(Count(2, 8), Time(0, 9)),
                            MaskConfig("Integer", "F64", "B2", "M6"), 17)
    assert CoordinatorSettings.from_dict(s.to_dict()) == s
    assert CoordinatorSettings.from_dict({}) == CoordinatorSettings()
    assert CoordinatorSettings.from_dict({"sum": {"count": {"max": 200}}}).sum.count == Count(1, 200)
    for data, field in [({"sums": {}}, "sums"), ({"sum": {"cnt": {}}}, "sum.cnt"),
                        ({"sum2": {"prob": 0.5}}, "sum2.prob"),
                        ({"update": {"time": {"mid": 1}}}, "update.time.mid"),
                        ({"mask": {"group_type": "Odd"}}, "mask"),
                        ({"mask": {"colour": "F32"}}, "mask.colour"),
                        ({"update": {"prob": 0}}, "update.prob")]:
        with pytest.raises(ConfigError) as info:
            CoordinatorSettings.from_dict(data)
        assert info.value.field == field, data


def test_participant_settings_checks():
    assert ParticipantSettings(KEYS, 0.5, MIN_MESSAGE_SIZE).scalar == Fraction(1, 2)
    assert ParticipantSettings(KEYS, Fraction(1, 3), None).max_message_size is None
    assert ParticipantSettings(KEYS, 0).scalar == 0
    for kwargs, field in [({"keys": b"k" * 32}, "keys"),
                          ({"scalar": -1}, "scalar"), ({"scalar": float("nan")}, "scalar"),
                          ({"scalar": float("inf")}, "scalar"), ({"scalar": "1"}, "scalar"),
                          ({"scalar": True}, "scalar"),
                          ({"max_message_size": MIN_MESSAGE_SIZE - 1}, "max_message_size"),
                          ({"max_message_size": 4096.0}, "max_message_size")]:
        with pytest.raises(ConfigError) as info:
            ParticipantSettings(**{"keys": KEYS, **kwargs})
        assert info.value.field == field, kwargs


def test_the_smallest_message_size_leaves_room_for_a_chunk():
    # xaynet's header (136) + sealed box (48) + chunk header (8) + 2 data bytes
    assert MIN_MESSAGE_SIZE == 136 + 48 + 8 + 2
