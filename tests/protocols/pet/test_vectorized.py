"""VectorizedMasker against the exact reference (Masker, MaskSeed.derive_mask, Aggregation):
bit-identical masked models, masks and aggregates for random config pairs with orders below
2**64 and fresh random inputs, without jax_enable_x64."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbjax.errors import AggregationError, MaskingError
from bbjax.protocols.pet import U64, VectorizedMasker, limbs, rejection
from bbjax.protocols.pet.chacha20 import seed_words
from bbjax.protocols.pet.config import (
    BoundType,
    DataType,
    GroupType,
    MaskConfig,
    MaskConfigPair,
    ModelType,
)
from bbjax.protocols.pet.masking import Aggregation, Masker, MaskSeed
from bbjax.protocols.pet.vectorized import derive_limbs, device_config, supports

SUPPORTED = [c for c in (MaskConfig(*v) for v in itertools.product(GroupType, DataType, BoundType, ModelType))
             if 2**32 < c.order < 2**64]
N, L = 4, 23
CHUNK = 12  # blocks per scan step: low-acceptance configs take many steps


def _pair(rng) -> MaskConfigPair:
    vect, unit = (SUPPORTED[i] for i in rng.integers(0, len(SUPPORTED), 2))
    return MaskConfigPair(vect, unit)


def _inputs(rng, config: MaskConfig, n: int = N, length: int = L):
    bound = float(config.add_shift)
    scalars = np.abs(rng.standard_normal(n) * 10.0 ** rng.integers(-3, 3, n)).astype(np.float32)
    scalars[0] = 0.0 if rng.random() < 0.3 else scalars[0]
    scalars[-1] = np.float32(1e9)  # above every unit bound: clamped to B1
    if config.data_type is DataType.F32:
        weights = (rng.standard_normal((n, length)) * bound * 10.0 ** rng.integers(-6, 1, (n, length)))
        weights[:, :3] = [bound, -2 * bound, 1e-42]
        return scalars, weights.astype(np.float32)
    return scalars, rng.integers(-2 * int(bound), 2 * int(bound) + 1, (n, length)).astype(np.int32)


def _exact_masks(pair, seeds, scalars, weights, bounded=False):
    return [Masker(pair).mask(s, w, seed=seed, bounded=bounded)[1]
            for seed, s, w in zip(seeds, scalars, weights)]


def test_supported_configs_are_the_45_with_two_word_draws():
    assert len(SUPPORTED) == 45
    assert {c.data_type for c in SUPPORTED} == {DataType.F32, DataType.I32, DataType.I64}
    assert {c.bound_type for c in SUPPORTED} == {BoundType.B0, BoundType.B2, BoundType.B4}
    assert supports(MaskConfigPair(SUPPORTED[0], SUPPORTED[-1]))
    assert not supports(MaskConfigPair.from_config(MaskConfig("Prime", "F32", "B6", "M3")))


def test_masks_are_bit_identical_to_the_exact_masker_on_random_config_pairs():
    rng = np.random.default_rng()
    for _ in range(6):
        pair = _pair(rng)
        seeds = [MaskSeed.generate() for _ in range(N)]
        scalars, weights = _inputs(rng, pair.vect)
        masked = VectorizedMasker(pair, L, chunk_blocks=CHUNK).mask(seeds, scalars, weights)
        assert masked.lo.shape == masked.hi.shape == (N, L + 1)
        got = VectorizedMasker(pair, L).to_mask_objects(masked)
        assert got == _exact_masks(pair, seeds, scalars, weights), pair


def test_derived_masks_and_aggregates_are_bit_identical_to_the_reference():
    rng = np.random.default_rng()
    for _ in range(4):
        pair = _pair(rng)
        seeds = [MaskSeed.generate() for _ in range(N)]
        vm = VectorizedMasker(pair, L, chunk_blocks=CHUNK)
        masks = vm.derive(seeds)
        assert vm.to_mask_objects(masks) == [s.derive_mask(L, pair) for s in seeds], pair
        exact = Aggregation(pair, L)
        for obj in vm.to_mask_objects(masks):
            exact.aggregate(obj)
        assert vm.to_mask_object(vm.aggregate(masks)) == exact.masked_object()


def test_a_cohort_masked_on_device_unmasks_to_its_weighted_mean():
    # the default scan (the whole mask in one step) for masking, small steps for the masks
    pair = MaskConfigPair.from_config(MaskConfig("Prime", "F32", "B2", "M3"))
    rng = np.random.default_rng()
    seeds = [MaskSeed.generate() for _ in range(N)]
    scalars = rng.uniform(0.5, 2.0, N).astype(np.float32)
    weights = rng.uniform(-40, 40, (N, L)).astype(np.float32)  # |s w| < B = 100: no clamping
    masked = VectorizedMasker(pair, L).to_mask_objects(VectorizedMasker(pair, L).mask(seeds, scalars, weights))
    assert masked == _exact_masks(pair, seeds, scalars, weights)
    aggregation = Aggregation(pair, L)
    for obj in masked:
        aggregation.aggregate(obj)
    vm = VectorizedMasker(pair, L, chunk_blocks=CHUNK)
    mask = vm.to_mask_object(vm.aggregate(vm.derive(seeds)))
    mean = (scalars[:, None].astype(float) * weights).sum(0) / scalars.astype(float).sum()
    np.testing.assert_allclose(aggregation.unmask(mask), mean, rtol=0, atol=N * 1e-9)


def test_bounded_masking_clamps_non_finite_weights_as_the_reference_does():
    pair = MaskConfigPair.from_config(MaskConfig("Integer", "F32", "B4", "M3"))
    rng = np.random.default_rng()
    seeds = [MaskSeed.generate() for _ in range(N)]
    scalars, weights = _inputs(rng, pair.vect)
    weights[0, 4:7] = [np.nan, np.inf, -np.inf]
    vm = VectorizedMasker(pair, L, chunk_blocks=CHUNK)
    got = vm.to_mask_objects(vm.mask(seeds, scalars, weights, bounded=True))
    assert got == _exact_masks(pair, seeds, scalars, weights, bounded=True)
    with pytest.raises(MaskingError, match=r"weights\[0, 4\].*not finite"):
        vm.mask(seeds, scalars, weights)


def test_wider_inputs_are_read_as_the_reference_reads_them():
    # float64 weights are rounded to float32 (F32 data); int64 weights in the int32 range
    # and integral floats are taken for I64 data
    rng = np.random.default_rng()
    seeds = [MaskSeed.generate() for _ in range(N)]
    for config, weights in [
        (MaskConfig("Prime", "F32", "B0", "M3"), rng.standard_normal((N, L))),
        (MaskConfig("Prime", "I64", "B0", "M3"), rng.integers(-2, 3, (N, L)).astype(np.int64)),
        (MaskConfig("Prime", "I64", "B0", "M3"), rng.integers(-2, 3, (N, L)).astype(np.float64)),
    ]:
        pair = MaskConfigPair.from_config(config)
        scalars = rng.uniform(0, 2, N).astype(np.float32)
        vm = VectorizedMasker(pair, L, chunk_blocks=CHUNK)
        assert vm.to_mask_objects(vm.mask(seeds, scalars, weights)) == _exact_masks(pair, seeds, scalars, weights)


def test_seeds_may_be_given_as_key_words():
    pair = MaskConfigPair.from_config(MaskConfig("Prime", "I32", "B2", "M3"))
    seeds = [MaskSeed.generate() for _ in range(N)]
    words = np.frombuffer(b"".join(s.as_bytes() for s in seeds), "<u4").reshape(N, 8).astype(np.uint32)
    vm = VectorizedMasker(pair, L, chunk_blocks=CHUNK)
    assert vm.to_mask_objects(vm.derive(words)) == [s.derive_mask(L, pair) for s in seeds]


@pytest.mark.slow
def test_the_pure_function_jits_and_vmaps_over_cohorts():
    pair = MaskConfigPair.from_config(MaskConfig("Power2", "F32", "B0", "M6"))
    seeds = [MaskSeed.generate() for _ in range(2 * N)]
    words = np.frombuffer(b"".join(s.as_bytes() for s in seeds), "<u4").reshape(2, N, 8)
    derive = jax.vmap(lambda k: derive_limbs(device_config(pair), k, length=L, chunk_blocks=CHUNK))
    batched = jax.jit(derive)(words)
    got = VectorizedMasker(pair, L).to_mask_objects(U64(*(np.asarray(v).reshape(2 * N, -1) for v in batched)))
    assert got == [s.derive_mask(L, pair) for s in seeds]


def test_a_model_of_length_zero_still_masks_its_scalar():
    pair = MaskConfigPair.from_config(MaskConfig("Power2", "I32", "B0", "M6"))
    seeds = [MaskSeed.generate() for _ in range(N)]
    scalars = np.float32([0.0, 0.5, 1.0, 3.0])
    vm = VectorizedMasker(pair, 0)
    got = vm.to_mask_objects(vm.mask(seeds, scalars, np.zeros((N, 0), np.int32)))
    assert got == _exact_masks(pair, seeds, scalars, np.zeros((N, 0), np.int32))


def test_mask_object_conversions_round_trip():
    pair = MaskConfigPair.from_config(MaskConfig("Integer", "I64", "B2", "M6"))
    seeds = [MaskSeed.generate() for _ in range(N)]
    vm = VectorizedMasker(pair, L, chunk_blocks=CHUNK)
    objects = [s.derive_mask(L, pair) for s in seeds]
    x = vm.from_mask_objects(objects)
    assert x.lo.dtype == np.uint32 and x.lo.shape == (N, L + 1)
    assert vm.to_mask_objects(x) == objects
    assert vm.to_mask_object(vm.from_mask_object(objects[1])) == objects[1]


# -- what the vectorized masker refuses --------------------------------------------------------

@pytest.mark.parametrize("config", [MaskConfig("Prime", "F32", "B6", "M3"), MaskConfig("Prime", "F64", "B0", "M3"),
                                    MaskConfig("Integer", "I32", "Bmax", "M3")], ids=["B6", "F64", "Bmax"])
def test_configs_with_orders_of_64_bits_and_more_are_refused(config):
    with pytest.raises(MaskingError, match="exact Masker"):
        VectorizedMasker(MaskConfigPair(SUPPORTED[0], config), 4)


@pytest.mark.parametrize("kwargs", [{"length": -1}, {"length": True}, {"length": 2**24 + 1},
                                    {"length": 4, "chunk_blocks": 0}])
def test_bad_lengths_and_chunks_are_refused(kwargs):
    with pytest.raises(MaskingError):
        VectorizedMasker(MaskConfigPair.from_config(SUPPORTED[0]), **kwargs)


def test_bad_masking_inputs_are_refused_before_any_work():
    f32 = MaskConfigPair.from_config(MaskConfig("Prime", "F32", "B0", "M3"))
    i32 = MaskConfigPair.from_config(MaskConfig("Prime", "I32", "B0", "M3"))
    seeds = [MaskSeed.generate() for _ in range(2)]
    ok_s, ok_w = np.ones(2, np.float32), np.zeros((2, 3), np.float32)
    cases = [
        (f32, [b"x" * 31, b"x" * 32], ok_s, ok_w, "seeds"),
        (f32, np.zeros((2, 7), np.uint32), ok_s, ok_w, "seed words"),
        (f32, seeds, np.float32([1, -1]), ok_w, r"scalars\[1\]"),
        (f32, seeds, np.float32([np.nan, 1]), ok_w, r"scalars\[0\]"),
        (f32, seeds, np.ones(3, np.float32), ok_w, "scalars"),
        (f32, seeds, ok_s, np.zeros((2, 4), np.float32), "shape"),
        (i32, seeds, ok_s, np.full((2, 3), 2**40, np.int64), "int32 range"),
        (i32, seeds, ok_s, np.full((2, 3), 0.5), "int32 range"),
    ]
    for pair, s, sc, w, what in cases:
        with pytest.raises(MaskingError, match=what):
            VectorizedMasker(pair, 3).mask(s, sc, w)


def test_aggregation_refuses_what_the_reference_refuses():
    pair = MaskConfigPair.from_config(MaskConfig("Prime", "F32", "B0", "M3"))
    vm = VectorizedMasker(pair, 2)
    q = pair.vect.order
    with pytest.raises(AggregationError, match="InvalidObject"):
        vm.aggregate(limbs.u64_from_ints([[0, q, 1]]))
    with pytest.raises(AggregationError, match="ModelMismatch"):
        vm.aggregate(limbs.u64_from_ints([[0, 1]]))
    with pytest.raises(AggregationError, match="TooManyModels"):
        vm.aggregate(limbs.u64_from_ints(np.zeros((1001, 3), dtype=object)))
    with pytest.raises(AggregationError, match="does not fit"):
        vm.from_mask_objects([MaskSeed.generate().derive_mask(3, pair)])


def test_the_accelerator_path_with_the_pallas_kernels_interpreted(monkeypatch):
    # what runs on GPU/TPU: the selectors pick the Pallas kernels (interpreted here) and the
    # limbs leave the sampler unpacked
    import kernels.chacha20 as kc
    import kernels.masked_sum as km

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(kc, "chacha20_blocks_pallas",
                        functools.partial(kc.chacha20_blocks_pallas, interpret=True))
    monkeypatch.setattr(km, "modular_sum_pallas", functools.partial(km.modular_sum_pallas, interpret=True))
    pair = MaskConfigPair(MaskConfig("Power2", "F32", "B0", "M6"), MaskConfig("Prime", "I64", "B2", "M3"))
    seeds = [MaskSeed.generate() for _ in range(2)]
    dc, keys = device_config(pair), jnp.asarray(seed_words(seeds))
    masks = jax.jit(lambda k: rejection.sample(k, dc.vect_draw, dc.unit_draw, 9, 4))(keys)
    vm = VectorizedMasker(pair, 9)
    assert vm.to_mask_objects(masks) == [s.derive_mask(9, pair) for s in seeds]
    assert vm.to_mask_object(vm.aggregate(masks)) == _exact_sum(pair, vm.to_mask_objects(masks))


def _exact_sum(pair, objects):
    aggregation = Aggregation(pair, len(objects[0].vect.data))
    for obj in objects:
        aggregation.aggregate(obj)
    return aggregation.masked_object()
