"""Tensor codec round trips, layout, type hash and error paths."""

from __future__ import annotations

import struct
import sys

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings

from bbjax.runtime import Limits, decode_tensor, encode_tensor, tensor_type_name, type_hash
from bbjax.runtime.tensor_codec import fnv1a64

from bbjax.errors import TensorDecodeError, TensorEncodeError

from .strategies import DTYPES, arrays

# ONNX TensorProto.DataType codes.
CODES = {
    "float32": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "int64": 7,
    "bool": 9, "float16": 10, "float64": 11, "uint32": 12, "uint64": 13, "bfloat16": 16,
}  # fmt: skip


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(max_examples=300, deadline=None)
@given(arrays())
def test_round_trip(array):
    data = encode_tensor(array)
    decoded = decode_tensor(data)
    assert same(decoded, array)
    assert decoded.flags.writeable and decoded.flags.owndata
    assert encode_tensor(decoded) == data


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layout(dtype):
    array = np.arange(6).astype(dtype).reshape(2, 3)
    data = encode_tensor(array)
    assert data[:2] == bytes([CODES[str(dtype)], 2])
    assert data[2:18] == struct.pack("<QQ", 2, 3)
    little_endian = array.byteswap() if sys.byteorder == "big" else array
    assert data[18:] == little_endian.tobytes()


def test_golden_bytes():
    dims = "0100000000000000" + "0200000000000000"
    assert encode_tensor(np.array([[1, 2]], np.int16)).hex() == "0502" + dims + "01000200"
    assert encode_tensor(np.float32(1.0)).hex() == "0100" + "0000803f"
    assert encode_tensor(np.zeros((0,), np.bool_)).hex() == "0901" + "0000000000000000"
    assert encode_tensor(np.array([1], ">i4")).hex() == "0601" + "0100000000000000" + "01000000"


@pytest.mark.parametrize("dtype", [">i2", ">u4", ">i8", ">f2", ">f4", ">f8"])
def test_big_endian_inputs_go_out_little_endian(dtype):
    array = np.array([[1.5, -2.0, 3.0]] if "f" in dtype else [[1, 2, 3]], dtype=dtype)
    native = array.astype(array.dtype.newbyteorder("="))
    assert encode_tensor(array) == encode_tensor(native)
    assert same(decode_tensor(encode_tensor(array)), native)


def test_jax_arrays_and_python_values():
    for array in [jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3), jnp.ones((2, 2), jnp.int32)]:
        decoded = decode_tensor(encode_tensor(array))
        assert same(decoded, np.asarray(array))
    bf16 = decode_tensor(encode_tensor(jnp.arange(3, dtype=jnp.bfloat16)))
    assert bf16.dtype == ml_dtypes.bfloat16
    assert same(decode_tensor(encode_tensor([[1.0, 2.0]])), np.array([[1.0, 2.0]]))
    assert same(decode_tensor(encode_tensor(True)), np.array(True))
    strided = np.arange(20, dtype=np.int32).reshape(4, 5)[:, ::2]
    assert same(decode_tensor(encode_tensor(strided)), np.ascontiguousarray(strided))


def test_fnv1a64_vectors():
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8


def test_type_hash():
    assert tensor_type_name(np.float32, (3, 4)) == "tensor<float32>[3,4]"
    assert tensor_type_name(ml_dtypes.bfloat16, ()) == "tensor<bfloat16>[]"
    assert tensor_type_name(">i8", (0,)) == "tensor<int64>[0]"
    assert tensor_type_name(jnp.bool_, [np.int64(2)]) == "tensor<bool>[2]"
    assert type_hash("float32", (3, 4)) == fnv1a64(b"tensor<float32>[3,4]") == 0xE735205E41F32140
    assert type_hash(ml_dtypes.bfloat16, ()) == 0x05EAEA2F6B77A6B3
    assert type_hash(np.int64, (2, 128)) == 0xED0EB9015ACE0572
    hashes = {type_hash(dtype, shape) for dtype in DTYPES for shape in [(), (1,), (3, 4), (4, 3)]}
    assert len(hashes) == 4 * len(DTYPES)


@pytest.mark.parametrize(
    ("dtype", "shape", "field"),
    [
        (np.complex64, (), "dtype"),
        (object, (), "dtype"),
        ("not-a-dtype", (), "dtype"),
        (np.float32, (-1,), "shape"),
        (np.float32, (1.5,), "shape"),
        (np.float32, 3, "shape"),
    ],
)
def test_type_hash_rejects(dtype, shape, field):
    with pytest.raises(TensorEncodeError) as info:
        type_hash(dtype, shape)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("array", "limits", "field"),
    [
        (np.zeros(2, np.complex64), Limits(), "dtype"),
        (np.array(["a"]), Limits(), "dtype"),
        (np.array([{}], dtype=object), Limits(), "dtype"),
        ([[1], [2, 3]], Limits(), "array"),
        (np.zeros((1,) * 9), Limits(), "rank"),
        (np.zeros((1, 1)), Limits(max_tensor_rank=1), "rank"),
        (np.zeros(100, np.float32), Limits(max_fill_bytes=401), "dims"),
        (np.zeros((0, 2**40), np.float32), Limits(), "dims"),
    ],
)
def test_encode_rejects(array, limits, field):
    with pytest.raises(TensorEncodeError) as info:
        encode_tensor(array, limits=limits)
    assert info.value.field == field


def test_encode_accepts_exactly_the_fill_cap():
    array = np.zeros(100, np.float32)
    assert len(encode_tensor(array, limits=Limits(max_fill_bytes=410))) == 410


VALID = encode_tensor(np.arange(6, dtype=np.int32).reshape(2, 3))  # 2 + 16 + 24 bytes


@pytest.mark.parametrize(
    ("data", "limits", "field", "offset"),
    [
        (b"", Limits(), "dtype", 0),
        (b"\x01", Limits(), "rank", 1),
        (b"\x08\x00", Limits(), "dtype", 0),  # string: not in the table
        (b"\xff\x00", Limits(), "dtype", 0),
        (b"\x01\x09" + bytes(72), Limits(), "rank", 1),
        (VALID, Limits(max_tensor_rank=1), "rank", 1),
        (VALID[:17], Limits(), "dims", 2),
        (VALID[:-1], Limits(), "elements", 18),
        (VALID + b"\x00", Limits(), "elements", 18),
        (VALID, Limits(max_fill_bytes=41), "data", 0),
        (b"\x01\x01" + struct.pack("<Q", 2**63), Limits(), "dims", 2),
        (b"\x01\x02" + struct.pack("<QQ", 0, 2**64 - 1), Limits(), "dims", 2),
        (b"\x09\x01" + struct.pack("<Q", 3) + b"\x01\x00\x02", Limits(), "elements", 12),
        ("text", Limits(), "data", 0),
    ],
)
def test_decode_rejects(data, limits, field, offset):
    with pytest.raises(TensorDecodeError) as info:
        decode_tensor(data, limits=limits)
    assert (info.value.field, info.value.offset) == (field, offset)
    assert str(info.value).startswith(f"{field} at offset {offset}: ")
