"""Cast and CastLike to and from the 2- and 4-bit integer types, against a numpy reference
written from the ONNX Cast spec (no ml_dtypes conversion of an out-of-range value).

The rules: a float truncates toward zero, and gives 0 when that is out of range, NaN or
infinite (which the spec leaves undefined; ONNX's reference gives 0 with ml_dtypes 0.7);
an integer keeps its low bits, read as two's complement when the target is signed; a bool
gives 0 or 1.
"""

from __future__ import annotations

import jax
import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper

from bbjax.errors import LoweringError
from bbjax.onnx import lower

SUB_BYTE = {
    TensorProto.INT2: (ml_dtypes.int2, -2, 1),
    TensorProto.UINT2: (ml_dtypes.uint2, 0, 3),
    TensorProto.INT4: (ml_dtypes.int4, -8, 7),
    TensorProto.UINT4: (ml_dtypes.uint4, 0, 15),
}
FLOATS = {
    TensorProto.FLOAT16: np.float16,
    TensorProto.BFLOAT16: ml_dtypes.bfloat16,
    TensorProto.FLOAT: np.float32,
    TensorProto.DOUBLE: np.float64,
}
INTS = {
    TensorProto.BOOL: np.bool_,
    TensorProto.INT8: np.int8,
    TensorProto.UINT8: np.uint8,
    TensorProto.INT16: np.int16,
    TensorProto.UINT16: np.uint16,
    TensorProto.INT32: np.int32,
    TensorProto.UINT32: np.uint32,
    TensorProto.INT64: np.int64,
    TensorProto.UINT64: np.uint64,
}
N = 600
# Boundaries of every sub-byte range, just inside and just outside, and special values.
EDGES = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 0.5, -0.5, 1.5, -1.5,
         1.999, 2.0, -2.999, -3.0, 3.999, 4.0, 7.999, 8.0, -8.999, -9.0, 15.999, 16.0, -0.999]


def _name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type)


def _model(src: int, dst: int, *, like: bool = False):
    """One Cast (or CastLike, ``like`` giving the target) from ``src`` to ``dst`` on ``[n]``."""
    inputs = [helper.make_tensor_value_info("x", src, ["n"])]
    if like:
        inputs.append(helper.make_tensor_value_info("like", dst, [1]))
        node = helper.make_node("CastLike", ["x", "like"], ["y"])
    else:
        node = helper.make_node("Cast", ["x"], ["y"], to=dst)
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info("y", dst, ["n"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])


def _reference_int(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The spec's cast of ``x`` to the integer range ``[lo, hi]`` (a power-of-two range)."""
    if x.dtype in [np.dtype(t) for t in FLOATS.values()]:
        t = np.trunc(x.astype(np.float64))
        defined = np.isfinite(t) & (t >= lo) & (t <= hi)
        return np.where(defined, t, 0).astype(np.int64)
    values = [int(v) for v in x.tolist()]  # exact Python ints, sub-byte and uint64 included
    modulus = hi - lo + 1
    return np.array([(v - lo) % modulus + lo for v in values], dtype=np.int64)


def _run(model, *args) -> np.ndarray:
    with jax.enable_x64(True):
        return np.asarray(jax.jit(lower(model))(*args)[0])


@pytest.fixture
def seed() -> int:
    """A fresh seed each run, named in failure messages."""
    return np.random.SeedSequence().entropy


def _float_inputs(rng, dtype) -> np.ndarray:
    values = np.concatenate([
        rng.uniform(-20, 20, N),                                   # mostly out of range
        rng.integers(-40, 41, N) / 2,                              # integers and halves
        rng.integers(-17, 18, N) + rng.uniform(-1e-3, 1e-3, N),    # near every integer
        EDGES,
    ])
    with np.errstate(over="ignore"):
        return rng.permutation(values).astype(dtype)


def _int_inputs(rng, dtype) -> np.ndarray:
    if dtype == np.bool_:
        return rng.integers(0, 2, N).astype(np.bool_)
    info = np.iinfo(dtype)
    drawn = rng.integers(info.min, info.max, N, dtype=dtype, endpoint=True)
    small = rng.integers(max(info.min, -40), 41, N).astype(dtype)
    return np.concatenate([drawn, small, np.array([info.min, info.max, 0], dtype=dtype)])


def _check(got: np.ndarray, dst: int, want: np.ndarray, seed: int) -> None:
    assert got.dtype == np.dtype(SUB_BYTE[dst][0]), f"seed {seed}"
    np.testing.assert_array_equal(got.astype(np.int64), want, err_msg=f"seed {seed}")


@pytest.mark.parametrize("dst", SUB_BYTE, ids=_name)
@pytest.mark.parametrize("src", FLOATS, ids=_name)
def test_float_to_sub_byte_int(seed, src, dst):
    x = _float_inputs(np.random.default_rng(seed), FLOATS[src])
    _, lo, hi = SUB_BYTE[dst]
    _check(_run(_model(src, dst), x), dst, _reference_int(x, lo, hi), seed)


@pytest.mark.parametrize("src,dst", [(s, d) for s in [*INTS, *SUB_BYTE] for d in SUB_BYTE
                                     if s != d], ids=_name)
def test_integer_to_sub_byte_int_keeps_low_bits(seed, src, dst):
    rng = np.random.default_rng(seed)
    if src in SUB_BYTE:
        dtype, lo, hi = SUB_BYTE[src]
        x = rng.integers(lo, hi + 1, N).astype(dtype)
    else:
        x = _int_inputs(rng, INTS[src])
    _, lo, hi = SUB_BYTE[dst]
    _check(_run(_model(src, dst), x), dst, _reference_int(x, lo, hi), seed)


@pytest.mark.parametrize("dst", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT8,
                                 TensorProto.UINT8, TensorProto.INT32], ids=_name)
@pytest.mark.parametrize("src", SUB_BYTE, ids=_name)
def test_sub_byte_int_to_wider_types(seed, src, dst):
    dtype, lo, hi = SUB_BYTE[src]
    values = np.random.default_rng(seed).integers(lo, hi + 1, N)
    got = _run(_model(src, dst), values.astype(dtype))
    if dst in FLOATS:
        assert got.dtype == np.dtype(FLOATS[dst])
        np.testing.assert_array_equal(got.astype(np.float64), values.astype(np.float64))
    else:
        info = np.iinfo(INTS[dst])
        assert got.dtype == np.dtype(INTS[dst])
        np.testing.assert_array_equal(got.astype(np.int64),
                                      _reference_int(values, int(info.min), int(info.max)))


@pytest.mark.parametrize("dst", SUB_BYTE, ids=_name)
def test_cast_like_takes_the_sub_byte_target_from_its_second_input(seed, dst):
    dtype, lo, hi = SUB_BYTE[dst]
    x = _float_inputs(np.random.default_rng(seed), np.float32)
    got = _run(_model(TensorProto.FLOAT, dst, like=True), x, np.zeros(1, dtype))
    _check(got, dst, _reference_int(x, lo, hi), seed)


def test_complex_to_sub_byte_int_is_refused():
    with pytest.raises(LoweringError, match="complex64"):
        _run(_model(TensorProto.COMPLEX64, TensorProto.INT4), np.ones(3, np.complex64))
