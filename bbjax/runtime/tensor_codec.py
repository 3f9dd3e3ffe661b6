"""Tensors on the wire: a dtype code, the rank, the dims, then the raw little-endian
elements (layout in ``docs/envelope.md``), and the type hash that names a tensor type.

:func:`decode_tensor` is total like :func:`~bbjax.runtime.decode`: any input gives an
array or a :class:`~bbjax.errors.TensorDecodeError`, and the shape is checked
against :class:`~bbjax.runtime.Limits` before anything is allocated.
"""

from __future__ import annotations

import math
import numbers
import struct
import sys
from typing import Any

import ml_dtypes
import numpy as np

from bbjax.errors import TensorDecodeError, TensorEncodeError
from bbjax.runtime.envelope import DEFAULT_LIMITS, Limits, byte_view

# (code, canonical name, dtype); the codes are ONNX TensorProto.DataType values.
_DTYPES: tuple[tuple[int, str, np.dtype], ...] = (
    (1, "float32", np.dtype(np.float32)),
    (2, "uint8", np.dtype(np.uint8)),
    (3, "int8", np.dtype(np.int8)),
    (4, "uint16", np.dtype(np.uint16)),
    (5, "int16", np.dtype(np.int16)),
    (6, "int32", np.dtype(np.int32)),
    (7, "int64", np.dtype(np.int64)),
    (9, "bool", np.dtype(np.bool_)),
    (10, "float16", np.dtype(np.float16)),
    (11, "float64", np.dtype(np.float64)),
    (12, "uint32", np.dtype(np.uint32)),
    (13, "uint64", np.dtype(np.uint64)),
    (16, "bfloat16", np.dtype(ml_dtypes.bfloat16)),
)
_BY_CODE = {code: (name, dtype) for code, name, dtype in _DTYPES}
_BY_DTYPE = {dtype: (code, name) for code, name, dtype in _DTYPES}

_PREFIX = struct.Struct("<BB")  # dtype code, rank
_DIM_SIZE = 8
_SWAP = sys.byteorder == "big"  # native order is not the wire's little-endian

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_U64_MASK = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    """The 64-bit FNV-1a hash of ``data``."""
    value = _FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV_PRIME) & _U64_MASK
    return value


def tensor_type_name(dtype: Any, shape: tuple[int, ...]) -> str:
    """The canonical name of a tensor type: ``"tensor<float32>[3,4]"``, ``"tensor<bool>[]"``."""
    _, name = _lookup(dtype)
    return f"tensor<{name}>[{','.join(str(dim) for dim in _check_shape(shape))}]"


def type_hash(dtype: Any, shape: tuple[int, ...]) -> int:
    """The u64 type hash of a tensor fill: :func:`fnv1a64` of :func:`tensor_type_name`."""
    return fnv1a64(tensor_type_name(dtype, shape).encode("ascii"))


def encode_tensor(array: Any, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The wire bytes of ``array`` (anything :func:`numpy.asarray` takes, jax arrays too).

    Raises :class:`TensorEncodeError` for an unsupported dtype, a rank over
    ``limits.max_tensor_rank``, or a size :func:`decode_tensor` would refuse under ``limits``.
    """
    try:
        array = np.asarray(array)
    except (TypeError, ValueError) as error:
        raise TensorEncodeError(
            f"not convertible to an array: {error}", field="array"
        ) from None
    code, _ = _lookup(array.dtype)
    if array.ndim > limits.max_tensor_rank:
        raise TensorEncodeError(
            f"rank {array.ndim} exceeds Limits.max_tensor_rank = {limits.max_tensor_rank}",
            field="rank",
        )
    problem = _size_problem(array.shape, array.dtype.itemsize, limits)
    if problem:
        raise TensorEncodeError(problem, field="dims")
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and _SWAP):
        array = array.byteswap()
    prefix = _PREFIX.pack(code, array.ndim) + struct.pack(f"<{array.ndim}Q", *array.shape)
    return prefix + array.tobytes()


def decode_tensor(
    data: bytes | bytearray | memoryview, *, limits: Limits = DEFAULT_LIMITS
) -> np.ndarray:
    """The array in ``data``: a new, writable array in native byte order.

    Raises :class:`TensorDecodeError` (and nothing else) when ``data`` is not exactly one
    tensor in the wire format within ``limits``.
    """
    view = byte_view(data, TensorDecodeError)
    size = len(view)
    if size > limits.max_fill_bytes:
        raise TensorDecodeError(
            f"{size} bytes exceed Limits.max_fill_bytes = {limits.max_fill_bytes}",
            field="data",
            offset=0,
        )
    if size < _PREFIX.size:  # the field at offset ``size`` is missing: dtype (0) or rank (1)
        raise TensorDecodeError(
            f"the input ends after {size} bytes", field=("dtype", "rank")[size], offset=size
        )
    code, rank = _PREFIX.unpack_from(view)
    if code not in _BY_CODE:
        raise TensorDecodeError(f"unknown dtype code {code}", field="dtype", offset=0)
    name, dtype = _BY_CODE[code]
    if rank > limits.max_tensor_rank:
        raise TensorDecodeError(
            f"rank {rank} exceeds Limits.max_tensor_rank = {limits.max_tensor_rank}",
            field="rank",
            offset=1,
        )
    data_at = _PREFIX.size + _DIM_SIZE * rank
    if size < data_at:
        raise TensorDecodeError(
            f"{rank} dims need {_DIM_SIZE * rank} bytes but {size - _PREFIX.size} remain",
            field="dims",
            offset=_PREFIX.size,
        )
    shape = struct.unpack_from(f"<{rank}Q", view, _PREFIX.size)
    problem = _size_problem(shape, dtype.itemsize, limits)
    if problem:
        raise TensorDecodeError(problem, field="dims", offset=_PREFIX.size)
    count = math.prod(shape)
    if size - data_at != count * dtype.itemsize:
        raise TensorDecodeError(
            f"{name}{list(shape)} needs {count * dtype.itemsize} bytes, got {size - data_at}",
            field="elements",
            offset=data_at,
        )
    if dtype.kind == "b":
        bad = np.flatnonzero(np.frombuffer(view, np.uint8, count, data_at) > 1)
        if bad.size:
            raise TensorDecodeError(
                "a bool byte is neither 0 nor 1", field="elements", offset=data_at + int(bad[0])
            )
    array = np.frombuffer(view, dtype, count, data_at).reshape(shape)
    return array.byteswap() if _SWAP else array.copy()


def _lookup(dtype: Any) -> tuple[int, str]:
    """The (code, canonical name) of a supported dtype."""
    try:
        dtype = np.dtype(dtype)
    except (TypeError, ValueError):
        raise TensorEncodeError(f"not a dtype: {dtype!r}", field="dtype") from None
    entry = _BY_DTYPE.get(dtype.newbyteorder("=") if dtype.byteorder in "<>" else dtype)
    if entry is None:
        supported = ", ".join(name for _, name, _ in _DTYPES)
        raise TensorEncodeError(
            f"unsupported dtype {dtype} (supported: {supported})", field="dtype"
        )
    return entry


def _check_shape(shape: Any) -> tuple[int, ...]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise TensorEncodeError(
            f"shape must be a sequence of ints, got {shape!r}", field="shape"
        ) from None
    if not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in dims):
        raise TensorEncodeError(f"dims must be integers, got {shape!r}", field="shape")
    if any(d < 0 for d in dims):
        raise TensorEncodeError(f"dims must be >= 0, got {shape!r}", field="shape")
    return tuple(int(d) for d in dims)


def _size_problem(shape: tuple[int, ...], itemsize: int, limits: Limits) -> str | None:
    """Why ``shape`` is refused, or None. Zero dims count as 1 here, so a shape is bounded
    even when it has no elements."""
    elements = itemsize * math.prod(max(dim, 1) for dim in shape)
    bound = _PREFIX.size + _DIM_SIZE * len(shape) + elements
    if bound > limits.max_fill_bytes:
        return (
            f"shape {list(shape)} (zero dims counted as 1) needs {bound} bytes, over "
            f"Limits.max_fill_bytes = {limits.max_fill_bytes}"
        )
    return None
