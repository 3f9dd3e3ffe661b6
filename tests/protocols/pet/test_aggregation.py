"""Aggregation and unmasking: N participants' masked models and masks, against the exact
weighted mean (Fractions), xaynet's aggregation tests, and every validation failure."""

import itertools
import os
import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbjax.errors import AggregationError, MaskingError
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
from tests.protocols.pet.reference import mean_tolerance, reference_unmask

ALL_CONFIGS = [
    MaskConfig(*names) for names in itertools.product(GroupType, DataType, BoundType, ModelType)
]
M3_CONFIGS = [MaskConfig(g, d, b, "M3") for g in GroupType for d in DataType for b in BoundType]
NP_TYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}
DEFAULT = MaskConfigPair.from_config(MaskConfig("Prime", "F32", "B0", "M3"))


def _random_weights(rng, config: MaskConfig, n: int) -> np.ndarray:
    """Weights up to 1.5x the bound (so some are clamped), or up to the type's range."""
    kind = NP_TYPES[config.data_type]
    if config.data_type in (DataType.F32, DataType.F64):
        top = float(np.finfo(kind).max) / 4 if config.bound_type is BoundType.Bmax else (
            1.5 * float(config.add_shift))
        return rng.uniform(-top, top, n).astype(kind)
    info = np.iinfo(kind)
    top = info.max if config.bound_type is BoundType.Bmax else int(1.5 * config.add_shift)
    return rng.integers(-top, top, n, dtype=kind, endpoint=True)


def _run(pair: MaskConfigPair, scalars, models):
    """Mask every model, aggregate the masked models and the derived masks, unmask."""
    length = len(models[0])
    masked_models, masks = Aggregation(pair, length), Aggregation(pair, length)
    for scalar, model in zip(scalars, models):
        seed, masked = Masker(pair).mask(scalar, model)
        masked_models.validate_aggregation(masked)
        masked_models.aggregate(masked)
        mask = seed.derive_mask(length, pair)
        masks.validate_aggregation(mask)
        masks.aggregate(mask)
    mask = masks.masked_object()
    masked_models.validate_unmasking(mask)
    return masked_models, mask


def _check_mean(pair: MaskConfigPair, scalars, models):
    """Unmasking gives the exact weighted mean of the clamped values within the tolerance
    the floors allow, equals the Fraction reference exactly, and rounds it to float64."""
    aggregate, mask = _run(pair, scalars, models)
    exact = aggregate.unmask_exact(mask)
    obj = aggregate.masked_object()
    assert exact == reference_unmask(pair.vect, pair.unit, len(models), list(obj.vect.data),
                                     obj.unit.value, list(mask.vect.data), mask.unit.value)
    clamped_s = [min(Fraction(s), pair.unit.add_shift) for s in scalars]
    b = pair.vect.add_shift
    scalar_sum = sum(clamped_s)
    tolerance_args = (pair.vect, pair.unit, len(models))
    for i, value in enumerate(exact):
        weighted = sum(max(-b, min(b, s * Fraction(m[i].item()))) for s, m in zip(clamped_s, models))
        tolerance = mean_tolerance(*tolerance_args, weighted, scalar_sum)
        assert abs(value - weighted / scalar_sum) <= tolerance, (i, float(tolerance))
    if pair.vect.bound_type is not BoundType.Bmax:  # Bmax F64 means overflow float64
        assert aggregate.unmask(mask).tolist() == [float(v) for v in exact]


# -- xaynet's aggregation tests (masking.rs: test_masking_and_aggregation[_scalar]_*) ------


@pytest.mark.parametrize("config", M3_CONFIGS, ids=lambda c: c.to_bytes().hex())
def test_xaynet_masking_and_aggregation(config):
    rng = np.random.default_rng()
    kind = NP_TYPES[config.data_type]
    if config.bound_type is not BoundType.Bmax:
        bound = int(config.add_shift)
    elif config.data_type in (DataType.F32, DataType.F64):
        bound = float(np.finfo(kind).max) / 2
    else:
        bound = int(np.iinfo(kind).max) // 2
    if config.data_type in (DataType.F32, DataType.F64):
        models = [rng.uniform(-bound, bound, 10).astype(kind) for _ in range(5)]
    else:
        models = [rng.integers(-bound, bound, 10, dtype=kind, endpoint=True) for _ in range(5)]
    pair = MaskConfigPair.from_config(config)
    aggregate, mask = _run(pair, [Fraction(1, 5)] * 5, models)
    averaged = [sum(Fraction(m[i].item()) for m in models) / 5 for i in range(10)]
    tolerance = Fraction(5, config.exp_shift)
    assert all(abs(a - u) <= tolerance for a, u in zip(averaged, aggregate.unmask_exact(mask)))


FLOAT_M3 = [c for c in M3_CONFIGS if c.data_type in (DataType.F32, DataType.F64)]


@pytest.mark.parametrize("config", FLOAT_M3, ids=lambda c: c.to_bytes().hex())
def test_xaynet_masking_and_aggregation_scalar(config):
    kind = NP_TYPES[config.data_type]
    bound = (float(np.finfo(kind).max) / 2 if config.bound_type is BoundType.Bmax
             else float(config.add_shift))
    count = 2 if config.bound_type is BoundType.Bmax or config.data_type is DataType.F64 else 5
    rng = np.random.default_rng()
    scalars = rng.uniform(float(np.finfo(kind).eps), bound, count).astype(kind)
    pair = MaskConfigPair.from_config(config)
    aggregate, mask = _run(pair, list(scalars), [[1] * 10] * count)
    tolerance = Fraction(count, config.exp_shift)
    assert all(abs(u - 1) <= tolerance for u in aggregate.unmask_exact(mask))


# -- fresh random configurations, scalars and weights --------------------------------------

SWEEP = [MaskConfig(g, d, b, m) for g, d, b, m in [
    ("Integer", "F32", "B0", "M3"), ("Prime", "F32", "B0", "M3"), ("Power2", "F32", "B0", "M3"),
    ("Prime", "F64", "B2", "M6"), ("Power2", "F64", "B6", "M12"), ("Integer", "I32", "B4", "M9"),
    ("Prime", "I64", "B6", "M3"), ("Power2", "F32", "Bmax", "M6"), ("Integer", "F64", "B4", "M3"),
    ("Prime", "I32", "Bmax", "M12"), ("Power2", "I64", "B2", "M6"), ("Integer", "F32", "B6", "M9"),
]]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SWEEP), st.sampled_from(SWEEP), st.integers(1, 6), st.integers(0, 2**32),
       st.lists(st.fractions(min_value=Fraction(1, 1000), max_value=3), min_size=6, max_size=6))
def test_unmasking_gives_the_weighted_mean(vect, unit, participants, seed, scalars):
    rng = np.random.default_rng(seed)
    models = [_random_weights(rng, vect, 7) for _ in range(participants)]
    _check_mean(MaskConfigPair(vect, unit), scalars[:participants], models)


@pytest.mark.slow
@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda c: c.to_bytes().hex())
def test_unmasking_gives_the_weighted_mean_every_config(config):
    rng = np.random.default_rng()
    scalars = [Fraction(random.randint(1, 10**6), random.randint(1, 10**6)) for _ in range(4)]
    _check_mean(MaskConfigPair.from_config(config), scalars,
                [_random_weights(rng, config, 50) for _ in range(4)])


def test_unmask_rounds_the_exact_mean_to_float64():
    pair = DEFAULT
    weights = [np.array([0.25, -0.75, 1 / 3], np.float32), np.array([0.5, 0.0, -1.0], np.float32)]
    aggregate, mask = _run(pair, [1, 1], weights)
    out = aggregate.unmask(mask)
    assert out.dtype == np.float64 and out.shape == (3,)
    expected = (weights[0].astype(np.float64) + weights[1]) / 2
    assert np.allclose(out, expected, rtol=0, atol=2 / pair.vect.exp_shift)


def test_aggregation_is_commutative():
    pair = MaskConfigPair(MaskConfig("Integer", "F64", "B2", "M3"),
                          MaskConfig("Power2", "F32", "B0", "M3"))
    rng = np.random.default_rng()
    objects = [Masker(pair).mask(Fraction(1, 3), rng.uniform(-50, 50, 9))[1] for _ in range(4)]
    results = set()
    for order in itertools.permutations(objects):
        aggregation = Aggregation(pair, 9)
        for obj in order:
            aggregation.aggregate(obj)
        results.add(aggregation.masked_object())
    assert len(results) == 1
    (total,) = results
    q, q1 = pair.vect.order, pair.unit.order
    assert total.vect.data == tuple(sum(col) % q for col in zip(*(o.vect.data for o in objects)))
    assert total.unit.value == sum(o.unit.value for o in objects) % q1


def test_masked_object_and_counts():
    aggregation = Aggregation(DEFAULT, 3)
    assert aggregation.nb_models == 0
    empty = aggregation.masked_object()  # xaynet's empty aggregate
    assert empty.vect.data == () and empty.unit.value == 1
    _, obj = Masker(DEFAULT).mask(1, [0.1, 0.2, 0.3])
    aggregation.aggregate(obj)
    assert aggregation.nb_models == 1 and aggregation.masked_object() == obj


def test_resume_continues_a_stored_aggregation():
    rng = np.random.default_rng()
    models = [rng.uniform(-1, 1, 5).astype(np.float32) for _ in range(4)]
    whole, mask = _run(DEFAULT, [1] * 4, models)
    partial, _ = _run(DEFAULT, [1] * 3, models[:3])
    resumed = Aggregation.resume(DEFAULT, 5, partial.masked_object(), 3)
    assert resumed.nb_models == 3 and resumed.masked_object() == partial.masked_object()
    empty = Aggregation.resume(DEFAULT, 5, None, 0)
    assert empty.nb_models == 0
    with pytest.raises(AggregationError, match="nb_models"):
        Aggregation.resume(DEFAULT, 5, partial.masked_object(), -1)
    with pytest.raises(AggregationError, match="TooManyModels"):
        Aggregation.resume(DEFAULT, 5, partial.masked_object(), DEFAULT.vect.max_nb_models + 1)
    with pytest.raises(AggregationError):
        Aggregation.resume(DEFAULT, 4, partial.masked_object(), 3)  # wrong length


# -- validation failures, with xaynet's reasons --------------------------------------------


def _object(pair, length, value=0):
    return MaskObject(MaskVect(pair.vect, (value,) * length), MaskUnit(pair.unit, value))


def test_validate_aggregation_reasons():
    other = MaskConfig("Integer", "F32", "B0", "M3")
    aggregation = Aggregation(DEFAULT, 2)
    cases = [
        (_object(MaskConfigPair(other, DEFAULT.unit), 2), "ModelMismatch"),
        (_object(MaskConfigPair(DEFAULT.vect, other), 2), "ScalarMismatch"),
        (_object(DEFAULT, 3), "ModelMismatch"),
        (_object(DEFAULT, 2, DEFAULT.vect.order), "InvalidObject"),
        ("not an object", "InvalidObject"),
    ]
    for obj, reason in cases:
        with pytest.raises(AggregationError, match=reason):
            aggregation.validate_aggregation(obj)
        with pytest.raises(AggregationError, match=reason):
            aggregation.aggregate(obj)
    assert aggregation.nb_models == 0


@pytest.mark.parametrize("vect_model, unit_model, reason",
                         [("M3", "M6", "TooManyModels"), ("M6", "M3", "TooManyScalars")])
def test_too_many_models(vect_model, unit_model, reason):
    pair = MaskConfigPair(MaskConfig("Prime", "F32", "B0", vect_model),
                          MaskConfig("Prime", "F32", "B0", unit_model))
    aggregation = Aggregation(pair, 1)
    obj = _object(pair, 1, 5)
    for _ in range(1000):
        aggregation.aggregate(obj)
    assert aggregation.nb_models == 1000
    with pytest.raises(AggregationError, match=reason):
        aggregation.validate_aggregation(obj)
    with pytest.raises(AggregationError, match=reason):
        aggregation.aggregate(obj)
    aggregation.validate_unmasking(_object(pair, 1))  # 1000 == max may still be unmasked


def test_validate_unmasking_reasons():
    other = MaskConfig("Integer", "F32", "B0", "M3")
    aggregation = Aggregation(DEFAULT, 2)
    with pytest.raises(AggregationError, match="NoModel"):
        aggregation.validate_unmasking(_object(DEFAULT, 2))
    with pytest.raises(AggregationError, match="NoModel"):
        aggregation.unmask(_object(DEFAULT, 2))
    aggregation.aggregate(Masker(DEFAULT).mask(1, [0.5, 0.5])[1])
    cases = [
        (_object(MaskConfigPair(other, DEFAULT.unit), 2), "MaskManyMismatch"),
        (_object(DEFAULT, 1), "MaskManyMismatch"),
        (_object(MaskConfigPair(DEFAULT.vect, other), 2), "MaskOneMismatch"),
        (_object(DEFAULT, 2, DEFAULT.vect.order + 1), "InvalidMask"),
        (None, "InvalidMask"),
    ]
    for mask, reason in cases:
        with pytest.raises(AggregationError, match=reason):
            aggregation.validate_unmasking(mask)
        with pytest.raises(AggregationError, match=reason):
            aggregation.unmask_exact(mask)


def test_zero_scalar_sum_has_no_mean():
    aggregate, mask = _run(DEFAULT, [0, 0], [[0.5], [0.25]])
    with pytest.raises(AggregationError, match="scalar sum is 0"):
        aggregate.unmask(mask)


def test_unmasked_weight_beyond_float64():
    config = MaskConfig("Integer", "F64", "Bmax", "M3")
    pair = MaskConfigPair.from_config(config)
    aggregation = Aggregation(pair, 1)
    # scalar sum 1e-300 (n1 / E1 - B1), weight (q - 1) / E - B ~ 1.8e308
    unit = int((config.add_shift + Fraction(10) ** -300) * config.exp_shift)
    aggregation.aggregate(MaskObject(MaskVect(config, (config.order - 1,)), MaskUnit(config, unit)))
    zero = _object(pair, 1)
    assert aggregation.unmask_exact(zero)[0] > 10**600
    with pytest.raises(AggregationError, match="float64"):
        aggregation.unmask(zero)


@pytest.mark.parametrize("config, length", [(DEFAULT.vect, 1), (DEFAULT, -1), (DEFAULT, 1.0)])
def test_bad_aggregation_arguments(config, length):
    with pytest.raises(MaskingError):
        Aggregation(config, length)


def test_seed_reuse_across_configs_is_deterministic():
    seed = MaskSeed(os.urandom(32))
    first = seed.derive_mask(4, DEFAULT)
    assert seed.derive_mask(4, DEFAULT) == first
