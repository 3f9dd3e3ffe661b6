"""bbjax.protocols.pet.limbs and fixed_point: two-uint32-limb arithmetic and xaynet's
fixed-point encoding against exact Python integers and fractions, on fresh random inputs."""

import zlib
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbjax.errors import MaskingError
from bbjax.protocols.pet import fixed_point, limbs
from bbjax.protocols.pet.config import MaskConfig
from bbjax.protocols.pet.limbs import U64

EDGES_64 = [0, 1, 2**32 - 1, 2**32, 2**63, 2**64 - 2, 2**64 - 1]


def _u64(rng, n):
    return [int(v) for v in rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)]


def _ints(x) -> list[int]:
    return [int(v) for v in limbs.u64_to_uint64(x).ravel()]


def test_mul_wide_is_the_full_64_bit_product():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**32, 4000, dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 2**32, 4000, dtype=np.uint64).astype(np.uint32)
    a[:3], b[:3] = [0, 2**32 - 1, 2**32 - 1], [5, 2**32 - 1, 1]
    got = _ints(jax.jit(limbs.mul_wide)(a, b))
    assert got == [int(x) * int(y) for x, y in zip(a, b)]


def test_add_sub_less_and_add_mod_are_exact():
    rng = np.random.default_rng(1)
    a = _u64(rng, 3000) + EDGES_64
    b = _u64(rng, 3000) + EDGES_64[::-1]
    ua, ub = limbs.u64_from_ints(a), limbs.u64_from_ints(b)
    (s, carry), d, lt = jax.jit(lambda x, y: (limbs.add(x, y), limbs.sub(x, y), limbs.less(x, y)))(ua, ub)
    assert _ints(s) == [(x + y) % 2**64 for x, y in zip(a, b)]
    assert np.asarray(carry).tolist() == [x + y >= 2**64 for x, y in zip(a, b)]
    assert _ints(d) == [(x - y) % 2**64 for x, y in zip(a, b)]
    assert np.asarray(lt).tolist() == [x < y for x, y in zip(a, b)]
    q = [int(v) for v in rng.integers(2**32 + 1, 2**64, 3000, dtype=np.uint64)] + [2**64 - 1] * 7
    x = [int(rng.integers(0, v, dtype=np.uint64)) for v in q[:-7]] + [2**64 - 2] * 7
    y = [int(rng.integers(0, v, dtype=np.uint64)) for v in q[:-7]] + [2**64 - 3, 0, 1, 2**63, 5, 2**64 - 2, 7]
    got = _ints(jax.jit(limbs.add_mod)(*(limbs.u64_from_ints(v) for v in (x, y, q))))
    assert got == [(u + v) % m for u, v, m in zip(x, y, q)]


def test_shifts_of_96_bit_numbers_floor_and_report_lost_bits():
    rng = np.random.default_rng(2)
    xs = [int(v) for v in rng.integers(0, 2**62, 2000, dtype=np.uint64)]
    xs = [v << int(rng.integers(0, 34)) | int(rng.integers(0, 2)) for v in xs] + [0, 2**96 - 1]
    parts = [np.array([(v >> (32 * i)) & 0xFFFFFFFF for v in xs], np.uint32) for i in range(3)]
    right = rng.integers(0, 130, len(xs)).astype(np.int32)
    left = rng.integers(0, 100, len(xs)).astype(np.int32)

    @jax.jit
    def shifts(parts, right, left):
        return limbs.shift_right(parts, right), limbs.shift_left_64(parts, left)

    (kept, lost), (low, overflow) = shifts(parts, right, left)
    kept_ints = [sum(int(kept[i][j]) << (32 * i) for i in range(3)) for j in range(len(xs))]
    assert kept_ints == [v >> int(s) for v, s in zip(xs, right)]
    assert np.asarray(lost).tolist() == [v % 2 ** int(s) != 0 for v, s in zip(xs, right)]
    assert _ints(low) == [(v << int(s)) % 2**64 for v, s in zip(xs, left)]
    assert np.asarray(overflow).tolist() == [(v << int(s)) >= 2**64 for v, s in zip(xs, left)]


def test_pack_and_unpack_keep_every_bit_pattern():
    rng = np.random.default_rng(3)
    special = np.array([0x7F800001, 0xFFC00001, 0x7FC00000, 0x7F800000, 0xFF800000, 0x00000001,
                        0x807FFFFF, 0x80000000, 0x00800000, 0x7FFFFFFF, 0xFFFFFFFF, 0], np.uint32)
    lo = np.concatenate([special, rng.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32)])
    hi = np.concatenate([special[::-1], rng.integers(0, 2**16, 5000).astype(np.uint32)])  # denormals
    packed = jax.jit(limbs.pack)(U64(lo, hi))
    assert packed.dtype == jnp.complex64
    back = jax.jit(limbs.unpack)(packed)
    np.testing.assert_array_equal(np.asarray(back.lo), lo)
    np.testing.assert_array_equal(np.asarray(back.hi), hi)


def test_u64_host_conversions_round_trip_and_refuse_out_of_range():
    values = EDGES_64 + [123456789012345]
    assert limbs.u64_to_uint64(limbs.u64_from_ints(values)).tolist() == values
    for bad in ([-1], [2**64]):
        with pytest.raises(Exception, match=r"\[0, 2\*\*64\)"):
            limbs.u64_from_ints(bad)


# -- the fixed-point encoding --------------------------------------------------------------

SUPPORTED = [MaskConfig("Prime", d, b, "M3") for d in ("F32", "I32", "I64") for b in ("B0", "B2", "B4")]


def _name(config: MaskConfig) -> str:
    return "/".join(v.value for v in (config.group_type, config.data_type, config.bound_type,
                                      config.model_type))


def _reference(s: Fraction, w: Fraction, config: MaskConfig) -> int:
    b, e = config.add_shift, config.exp_shift
    v = min(max(min(s, b) * w, -b), b)
    return int((v + b) * e // 1)


def _float_inputs(rng, n, bound):
    kinds = rng.integers(0, 6, n)
    w = np.where(kinds == 0, rng.standard_normal(n) * bound,
        np.where(kinds == 1, rng.uniform(-3, 3, n) * bound,
        np.where(kinds == 2, 2.0 ** rng.integers(-149, 128, n).astype(float) * rng.choice([-1, 1], n),
        np.where(kinds == 3, rng.integers(-4, 5, n) * bound / 2, rng.standard_normal(n) * 1e-40))))
    w = w.astype(np.float32)
    w[:6] = [bound, -bound, np.nextafter(np.float32(bound), np.float32(0)), -0.0, 3.4e38, -3.4e38]
    return w


@jax.jit
def _encode_floats(s, w, fp):
    negative, m_w, e_w = fixed_point.float_parts(w)
    m_s, e_s = fixed_point.clamped_scalar(s, fp)
    return fixed_point.encode(negative, m_s, e_s, m_w, e_w, fp)


@jax.jit
def _encode_ints(s, w, fp):
    negative, m_w, e_w = fixed_point.int_parts(w)
    m_s, e_s = fixed_point.clamped_scalar(s, fp)
    return fixed_point.encode(negative, m_s, e_s, m_w, e_w, fp)


@pytest.mark.parametrize("config", SUPPORTED, ids=_name)
def test_encoding_of_float32_products_is_exactly_the_rational_floor(config):
    rng = np.random.default_rng(zlib.crc32(_name(config).encode()))
    bound = float(config.add_shift)
    w = _float_inputs(rng, 1500, bound)
    s = np.abs(_float_inputs(rng, 1500, 1.0))
    s[:50], s[50:60] = 1.0, bound * 2  # scalars at and above the clamp B1
    got = _ints(_encode_floats(s, w, fixed_point.fixed_point(config)))
    assert got == [_reference(Fraction(float(a)), Fraction(float(b)), config) for a, b in zip(s, w)]


@pytest.mark.parametrize("config", SUPPORTED[3:], ids=_name)
def test_encoding_of_int32_weights_is_exactly_the_rational_floor(config):
    rng = np.random.default_rng(zlib.crc32(_name(config).encode()) + 1)
    w = rng.integers(-2**31, 2**31, 1500, dtype=np.int64).astype(np.int32)
    w[:5] = [-2**31, 2**31 - 1, 0, -1, 1]
    s = (np.abs(rng.standard_normal(1500)) * 10.0 ** rng.integers(-9, 2, 1500)).astype(np.float32)
    got = _ints(_encode_ints(s, w, fixed_point.fixed_point(config)))
    assert got == [_reference(Fraction(float(a)), Fraction(int(b)), config) for a, b in zip(s, w)]


@pytest.mark.parametrize("config, what", [(MaskConfig("Prime", "F32", "Bmax", "M3"), "bound"),
                                          (MaskConfig("Prime", "F64", "B0", "M3"), "precision")],
                         ids=["F32-Bmax", "F64"])
def test_fixed_point_refuses_configs_whose_numbers_do_not_fit_64_bits(config, what):
    with pytest.raises(MaskingError, match=what):
        fixed_point.fixed_point(config)
