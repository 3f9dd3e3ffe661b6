"""ONNX element types <-> numpy / JAX dtypes."""

from __future__ import annotations

import jax
import ml_dtypes
import numpy as np
import onnx

_EXTRA = {
    onnx.TensorProto.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    onnx.TensorProto.FLOAT8E4M3FN: np.dtype(ml_dtypes.float8_e4m3fn),
    onnx.TensorProto.FLOAT8E4M3FNUZ: np.dtype(ml_dtypes.float8_e4m3fnuz),
    onnx.TensorProto.FLOAT8E5M2: np.dtype(ml_dtypes.float8_e5m2),
    onnx.TensorProto.FLOAT8E5M2FNUZ: np.dtype(ml_dtypes.float8_e5m2fnuz),
    onnx.TensorProto.INT4: np.dtype(ml_dtypes.int4),
    onnx.TensorProto.UINT4: np.dtype(ml_dtypes.uint4),
}


def numpy_dtype(elem_type: int) -> np.dtype:
    """The numpy dtype of an ONNX ``TensorProto.DataType`` (exact, not canonicalized)."""
    if elem_type in _EXTRA:
        return _EXTRA[elem_type]
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def jax_dtype(elem_type: int) -> np.dtype:
    """The dtype JAX will actually use for an ONNX element type (64-bit narrowed unless x64)."""
    return np.dtype(jax.dtypes.canonicalize_dtype(numpy_dtype(elem_type)))


def onnx_elem_type(dtype) -> int:
    """The ONNX element type of a numpy / JAX dtype."""
    dtype = np.dtype(dtype)
    for elem, dt in _EXTRA.items():
        if dt == dtype:
            return elem
    return onnx.helper.np_dtype_to_tensor_dtype(dtype)
