"""Masker, MaskSeed and mask objects against a Fraction reference of xaynet's masking, xaynet's
own masking tests, and xaynet's serialization fixtures."""

import itertools
import os
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbjax.errors import AggregationError, MaskingError, PetDecodeError
from bbjax.protocols import pet
from bbjax.protocols.pet.config import (
    BoundType,
    DataType,
    GroupType,
    MaskConfig,
    MaskConfigPair,
    ModelType,
)
from bbjax.protocols.pet.masking import (
    Aggregation,
    Masker,
    MaskObject,
    MaskSeed,
    MaskUnit,
    MaskVect,
)
from bbjax.protocols.pet.prng import Prng
from tests.protocols.pet.reference import reference_mask

ALL_CONFIGS = [
    MaskConfig(*names) for names in itertools.product(GroupType, DataType, BoundType, ModelType)
]
M3_CONFIGS = [MaskConfig(g, d, b, "M3") for g in GroupType for d in DataType for b in BoundType]
DEFAULT = MaskConfigPair.from_config(MaskConfig("Prime", "F32", "B0", "M3"))
NP_TYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}


def _bound(config: MaskConfig, divisor: float):
    """xaynet's test bound: the config's bound, or for Bmax the type's max / divisor."""
    kind = NP_TYPES[config.data_type]
    if config.bound_type is not BoundType.Bmax:
        return kind(int(config.add_shift))
    if config.data_type in (DataType.F32, DataType.F64):
        return kind(np.finfo(kind).max / kind(divisor))
    return kind(np.iinfo(kind).max // int(divisor))


def _uniform(rng, config: MaskConfig, low, high, n: int) -> np.ndarray:
    kind = NP_TYPES[config.data_type]
    if config.data_type in (DataType.F32, DataType.F64):
        return rng.uniform(float(low), float(high), n).astype(kind)
    info = np.iinfo(kind)
    low, high = max(int(low), info.min), min(int(high), info.max)
    return rng.integers(low, high, n, dtype=kind, endpoint=True)


def _exact(weights) -> list[Fraction]:
    return [Fraction(w.item()) for w in weights]


# -- xaynet's masking tests (masking.rs: test_masking_*, test_masking_scalar_*) ------------


@pytest.mark.parametrize("config", M3_CONFIGS, ids=lambda c: "_".join(c.to_bytes().hex()))
def test_xaynet_masking_single_model(config):
    rng = np.random.default_rng()
    bound = _bound(config, 2.1)
    weights = _uniform(rng, config, -bound, bound, 10)
    pair = MaskConfigPair.from_config(config)
    seed, masked = Masker(pair).mask(1, weights)
    assert len(masked.vect.data) == 10 and masked.is_valid()
    aggregation = Aggregation(pair, 10)
    aggregation.aggregate(masked)
    unmasked = aggregation.unmask_exact(seed.derive_mask(10, pair))
    tolerance = Fraction(1, config.exp_shift)
    assert all(abs(w - u) <= tolerance for w, u in zip(_exact(weights), unmasked))


FLOAT_M3 = [c for c in M3_CONFIGS if c.data_type in (DataType.F32, DataType.F64)]


@pytest.mark.parametrize("config", FLOAT_M3, ids=lambda c: "_".join(c.to_bytes().hex()))
def test_xaynet_masking_scalar(config):
    kind = NP_TYPES[config.data_type]
    scalar = _uniform(np.random.default_rng(), config, np.finfo(kind).eps, _bound(config, 2.1), 1)
    pair = MaskConfigPair.from_config(config)
    seed, masked = Masker(pair).mask(scalar[0], [1] * 10)
    aggregation = Aggregation(pair, 10)
    aggregation.aggregate(masked)
    unmasked = aggregation.unmask_exact(seed.derive_mask(10, pair))
    assert all(abs(u - 1) <= Fraction(1, config.exp_shift) for u in unmasked)


# -- the exact reference, on fresh random configs, scalars and weights ---------------------


def _weights_strategy(data_type: DataType):
    if data_type is DataType.F32:
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    if data_type is DataType.F64:
        return st.floats(allow_nan=False, allow_infinity=False)
    bits = 32 if data_type is DataType.I32 else 64
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


SCALARS = st.one_of(
    st.integers(0, 10**7), st.fractions(min_value=0, max_value=10**7),
    st.floats(min_value=0, max_value=1e30), st.just(0),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ALL_CONFIGS), st.sampled_from(ALL_CONFIGS), SCALARS,
       st.binary(min_size=32, max_size=32), st.data())
def test_mask_equals_the_fraction_reference(vect, unit, scalar, seed, data):
    weights = data.draw(st.lists(_weights_strategy(vect.data_type), max_size=8))
    # and some weights spread over +-1.5 bound, most of them not clamped
    top = 1.5 * float(min(vect.add_shift, 2**62))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    array = np.concatenate([np.array(weights, dtype=NP_TYPES[vect.data_type]),
                            _uniform(rng, vect, -top, top, 8)])
    pair = MaskConfigPair(vect, unit)
    got_seed, masked = Masker(pair).mask(scalar, array, seed=MaskSeed(seed))
    ref_data, ref_unit = reference_mask(vect, unit, seed, Fraction(scalar), _exact(array))
    assert got_seed == MaskSeed(seed)
    assert masked.vect.data == tuple(ref_data)
    assert masked.unit.value == ref_unit
    assert masked.is_valid() and masked.config == pair


def test_masked_minus_mask_is_the_shifted_weight():
    config = MaskConfig("Integer", "F64", "B2", "M6")
    pair = MaskConfigPair.from_config(config)
    weights = np.array([-100.0, -0.5, 0.0, 0.25, 99.5, 100.0])
    seed, masked = Masker(pair).mask(Fraction(1, 2), weights)
    mask = seed.derive_mask(len(weights), pair)
    shifted = [(a - m) % config.order for a, m in zip(masked.vect.data, mask.vect.data)]
    e = config.exp_shift
    assert shifted == [int((Fraction(w) / 2 + 100) * e) for w in weights]
    assert (masked.unit.value - mask.unit.value) % config.order == int(Fraction(201, 2) * e)


def test_clamping_of_weights_and_scalar():
    seed = MaskSeed.generate()
    masker = Masker(DEFAULT)
    _, clamped = masker.mask(7, [5.0, -3.0, 0.5], seed=seed)  # scalar clamped to B1 = 1
    _, explicit = masker.mask(1, [1.0, -1.0, 0.5], seed=seed)
    assert clamped == explicit


def test_f32_weights_are_their_float32_values():
    seed = MaskSeed.generate()
    pair = MaskConfigPair.from_config(MaskConfig("Prime", "F32", "B0", "M3"))
    _, from_f64 = Masker(pair).mask(1, np.array([0.1, -0.3]), seed=seed)
    ref, _ = reference_mask(pair.vect, pair.unit, seed.as_bytes(), Fraction(1),
                            [Fraction(float(np.float32(0.1))), Fraction(float(np.float32(-0.3)))])
    assert from_f64.vect.data == tuple(ref)
    _, from_list = Masker(pair).mask(1, [np.float32(0.1), np.float32(-0.3)], seed=seed)
    assert from_list == from_f64


@pytest.mark.parametrize("data_type", ["F32", "F64"])
def test_non_finite_weights(data_type):
    # xaynet model.rs test_model_f32/f64_from_weird_primitives
    kind = NP_TYPES[data_type]
    pair = MaskConfigPair.from_config(MaskConfig("Prime", data_type, "Bmax", "M3"))
    seed = MaskSeed.generate()
    for bad in (np.inf, -np.inf, np.nan):
        with pytest.raises(MaskingError, match=r"weights\[1\].*not finite"):
            Masker(pair).mask(1, np.array([0.0, bad, 1.0], dtype=kind), seed=seed)
    top = np.finfo(kind).max
    _, bounded = Masker(pair).mask(1, np.array([np.inf, -np.inf, np.nan], kind), seed, bounded=True)
    _, explicit = Masker(pair).mask(1, np.array([top, -top, 0.0], kind), seed)
    assert bounded == explicit


def test_f64_beyond_f32_range_is_not_finite_as_f32():
    with pytest.raises(MaskingError, match="not finite as F32"):
        Masker(DEFAULT).mask(1, np.array([1e39]))


@pytest.mark.parametrize("data_type", ["I32", "I64"])
def test_integer_weights(data_type):
    pair = MaskConfigPair.from_config(MaskConfig("Power2", data_type, "B6", "M3"))
    seed = MaskSeed.generate()
    _, from_ints = Masker(pair).mask(1, np.array([-5, 0, 7], dtype=np.int64), seed)
    _, from_floats = Masker(pair).mask(1, [-5.0, 0.0, 7.0], seed)
    assert from_ints == from_floats
    with pytest.raises(MaskingError, match="not an integer"):
        Masker(pair).mask(1, [0.5])
    with pytest.raises(MaskingError, match="not an integer"):
        Masker(pair).mask(1, [np.nan], bounded=True)
    top = 2**31 if data_type == "I32" else 2**63
    with pytest.raises(MaskingError, match="outside the range"):
        Masker(pair).mask(1, np.array([top], dtype=np.uint64))


@pytest.mark.parametrize("weights", [np.zeros((2, 2)), ["a", "b"], [[1.0], [1.0, 2.0]],
                                     [Fraction(1, 2)], [True, False], 3.0])
def test_bad_weights(weights):
    with pytest.raises(MaskingError, match="weights"):
        Masker(DEFAULT).mask(1, weights)


@pytest.mark.parametrize("scalar", [-1, -0.5, Fraction(-1, 3), np.nan, np.inf, True, "1", None])
def test_bad_scalar(scalar):
    with pytest.raises(MaskingError, match="scalar"):
        Masker(DEFAULT).mask(scalar, [0.0])


def test_scalar_types_are_exact():
    seed = MaskSeed.generate()
    masker = Masker(DEFAULT)
    results = {masker.mask(s, [0.5], seed=seed)[1]
               for s in (Fraction(1, 2), 0.5, np.float32(0.5), np.float64(0.5))}
    assert len(results) == 1
    assert masker.mask(1, [0.5], seed=seed)[1] == masker.mask(np.int64(1), [0.5], seed=seed)[1]


def test_bad_masker_arguments():
    with pytest.raises(MaskingError, match="MaskConfigPair"):
        Masker(MaskConfig("Prime", "F32", "B0", "M3"))
    with pytest.raises(MaskingError, match="seed"):
        Masker(DEFAULT).mask(1, [0.0], seed=bytes(32))


def test_fresh_seeds_give_fresh_masks():
    a_seed, a = Masker(DEFAULT).mask(1, [0.0] * 8)
    b_seed, b = Masker(DEFAULT).mask(1, [0.0] * 8)
    assert a_seed != b_seed and a != b


# -- MaskSeed ------------------------------------------------------------------------------


def test_mask_seed():
    # xaynet seed.rs test_constants / test_derive_mask
    raw = os.urandom(32)
    seed = MaskSeed(raw)
    assert seed.as_bytes() == raw and len(MaskSeed.generate().as_bytes()) == 32
    assert raw.hex() not in repr(seed)
    config = MaskConfig("Prime", "F32", "B0", "M3")
    mask = seed.derive_mask(10, MaskConfigPair.from_config(config))
    assert len(mask.vect.data) == 10 and all(v < config.order for v in mask.vect.data)
    for bad in (bytes(31), bytes(33), "x" * 32, None):
        with pytest.raises(MaskingError, match="32 bytes"):
            MaskSeed(bad)


def test_derive_mask_draws_the_unit_first():
    raw = os.urandom(32)
    pair = MaskConfigPair(MaskConfig("Power2", "F64", "B4", "M9"),
                          MaskConfig("Prime", "F32", "B0", "M3"))
    mask = MaskSeed(raw).derive_mask(25, pair)
    prng = Prng(raw)
    assert mask.unit == MaskUnit(pair.unit, prng.integer(pair.unit.order))
    assert mask.vect == MaskVect(pair.vect, tuple(prng.integer(pair.vect.order) for _ in range(25)))
    assert MaskSeed(raw).derive_mask(7, pair).vect.data == mask.vect.data[:7]


@pytest.mark.parametrize("length, config", [(-1, DEFAULT), (1.0, DEFAULT), (3, DEFAULT.vect)])
def test_derive_mask_arguments(length, config):
    with pytest.raises(MaskingError):
        MaskSeed.generate().derive_mask(length, config)


# -- mask objects and their wire form ------------------------------------------------------

XAYNET_CONFIG = MaskConfig("Integer", "I32", "B0", "M3")  # object/serialization/mod.rs
XAYNET_VECT_BYTES = bytes([0, 2, 0, 3, 0, 0, 0, 4] + [1, 0, 0, 0, 0, 0] + [2, 0, 0, 0, 0, 0]
                          + [3, 0, 0, 0, 0, 0] + [4, 0, 0, 0, 0, 0])
XAYNET_UNIT_BYTES = bytes([0, 2, 0, 3, 1, 0, 0, 0, 0, 0])


def test_xaynet_serialization_fixtures():
    vect = MaskVect(XAYNET_CONFIG, (1, 2, 3, 4))
    unit = MaskUnit(XAYNET_CONFIG, 1)
    obj = MaskObject(vect, unit)
    assert vect.to_bytes() == XAYNET_VECT_BYTES
    assert unit.to_bytes() == XAYNET_UNIT_BYTES
    assert obj.to_bytes() == XAYNET_VECT_BYTES + XAYNET_UNIT_BYTES
    assert len(obj.to_bytes()) == 42
    assert MaskObject.from_bytes(XAYNET_VECT_BYTES + XAYNET_UNIT_BYTES) == obj
    assert MaskObject.parse(b"xyz" + obj.to_bytes() + b"tail", 3) == (obj, 42)


def test_every_truncation_is_a_decode_error():
    data = XAYNET_VECT_BYTES + XAYNET_UNIT_BYTES
    for end in range(len(data)):
        with pytest.raises(PetDecodeError, match="truncated"):
            MaskObject.parse(data[:end])
    with pytest.raises(PetDecodeError, match="trailing"):
        MaskObject.from_bytes(data + b"\x00")


def test_bad_config_bytes_are_decode_errors():
    data = bytearray(XAYNET_VECT_BYTES + XAYNET_UNIT_BYTES)
    data[2] = 7
    with pytest.raises(PetDecodeError, match="vect config.*bound_type"):
        MaskObject.from_bytes(bytes(data))
    data = bytearray(XAYNET_VECT_BYTES + XAYNET_UNIT_BYTES)
    data[len(XAYNET_VECT_BYTES) + 3] = 0
    with pytest.raises(PetDecodeError, match="unit config.*model_type"):
        MaskObject.from_bytes(bytes(data))


def test_huge_count_is_a_decode_error():
    data = bytes([1, 1, 255, 12, 255, 255, 255, 255]) + bytes(100)
    with pytest.raises(PetDecodeError, match="truncated"):
        MaskObject.parse(data)


def test_numbers_above_the_order_parse_but_are_invalid():
    order = XAYNET_CONFIG.order  # 20_000_000_000_001 < 2^48
    obj = MaskObject(MaskVect(XAYNET_CONFIG, (order,)), MaskUnit(XAYNET_CONFIG, 0))
    parsed = MaskObject.from_bytes(obj.to_bytes())
    assert parsed == obj and not parsed.is_valid()
    aggregation = Aggregation(MaskConfigPair.from_config(XAYNET_CONFIG), 1)
    with pytest.raises(AggregationError, match="InvalidObject"):
        aggregation.validate_aggregation(parsed)


@pytest.mark.parametrize("data, offset", [("abc", 0), (b"", 1), (b"\x00" * 20, -1),
                                          (b"\x00" * 20, True), (None, 0)])
def test_parse_arguments(data, offset):
    with pytest.raises(PetDecodeError):
        MaskObject.parse(data, offset)


def test_unrepresentable_numbers_refuse_to_serialize():
    for value in (-1, 2**48, 2**64, 2**70):
        with pytest.raises(MaskingError, match="6 bytes"):
            MaskVect(XAYNET_CONFIG, (0, value)).to_bytes()
    big = MaskConfig("Prime", "F64", "B6", "M12")  # 16 bytes per number
    with pytest.raises(MaskingError, match="16 bytes"):
        MaskUnit(big, 2**128).to_bytes()


def test_object_constructors_check_types():
    with pytest.raises(MaskingError, match="integer"):
        MaskVect(XAYNET_CONFIG, (1.5,))
    with pytest.raises(MaskingError, match="integer"):
        MaskUnit(XAYNET_CONFIG, "1")
    with pytest.raises(MaskingError, match="config"):
        MaskVect("Integer", (1,))
    with pytest.raises(MaskingError, match="MaskVect"):
        MaskObject(MaskUnit(XAYNET_CONFIG, 1), MaskUnit(XAYNET_CONFIG, 1))
    assert MaskVect(XAYNET_CONFIG, np.array([1, 2], np.uint64)).data == (1, 2)
    assert MaskVect(XAYNET_CONFIG, [np.int32(3)]).data == (3,)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 8))
def test_parse_is_total(data, offset):
    offset = min(offset, len(data))
    try:
        obj, used = MaskObject.parse(data, offset)
    except PetDecodeError:
        return
    assert obj.to_bytes() == data[offset : offset + used]


VALID_WIRE = MaskObject(MaskVect(MaskConfig("Power2", "F64", "B2", "M9"), (5, 2**100, 0)),
                        MaskUnit(MaskConfig("Prime", "I32", "Bmax", "M3"), 77)).to_bytes()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID_WIRE) - 1), st.integers(0, 255)), max_size=3),
       st.integers(0, len(VALID_WIRE) + 4))
def test_parse_of_damaged_objects_is_total(edits, end):
    data = bytearray(VALID_WIRE + bytes(4))
    for pos, byte in edits:
        data[pos] = byte
    data = bytes(data[:end])
    try:
        obj, used = MaskObject.parse(data)
    except PetDecodeError:
        return
    assert obj.to_bytes() == data[:used]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ALL_CONFIGS).flatmap(lambda c: st.tuples(
    st.just(c), st.sampled_from(ALL_CONFIGS), st.lists(st.integers(0, c.order - 1), max_size=6))),
    st.integers(0, 2**64), st.data())
def test_valid_objects_round_trip(configs, unit_seed, data):
    vect_config, unit_config, values = configs
    unit_value = data.draw(st.integers(0, unit_config.order - 1))
    obj = MaskObject(MaskVect(vect_config, tuple(values)), MaskUnit(unit_config, unit_value))
    assert obj.is_valid()
    encoded = obj.to_bytes()
    assert len(encoded) == (8 + len(values) * vect_config.bytes_per_number
                            + 4 + unit_config.bytes_per_number)
    assert MaskObject.from_bytes(encoded) == obj
    assert MaskObject.parse(encoded + bytes(unit_seed % 5), 0) == (obj, len(encoded))


def test_names_are_exported():
    for name in ("Aggregation", "Masker", "MaskObject", "MaskSeed", "MaskUnit", "MaskVect",
                 "MaskConfig", "MaskConfigPair", "Prng", "GroupType", "DataType", "BoundType",
                 "ModelType"):
        assert name in pet.__all__ and hasattr(pet, name)
    assert ModelType.M3.code == 3
