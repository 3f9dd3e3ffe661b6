"""Elementwise ONNX ops: arithmetic, activations, comparisons, logic, casts and quantization."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax import lax
from onnx import TensorProto

from bbjax.onnx.dtypes import jax_dtype, onnx_elem_type
from bbjax.onnx.ops.registry import op

_FLOAT8 = frozenset({TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ,
                     TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ})
_SMALL_FLOATS = frozenset({TensorProto.FLOAT4E2M1, TensorProto.FLOAT6E2M3,
                           TensorProto.FLOAT6E3M2})
_SUB_BYTE_INTS = frozenset({TensorProto.INT2, TensorProto.UINT2, TensorProto.INT4,
                            TensorProto.UINT4})


def _is_int(x) -> bool:
    return jnp.issubdtype(x.dtype, jnp.integer)


def _target_dtype(ctx, elem_type: int) -> np.dtype:
    """The JAX dtype of ONNX element type ``elem_type``, or a LoweringError."""
    if elem_type == TensorProto.STRING:
        raise ctx.error("JAX has no string dtype")
    try:
        return jax_dtype(elem_type)
    except (KeyError, TypeError, ValueError):
        raise ctx.error(f"invalid element type {elem_type!r}") from None


# -- constants ------------------------------------------------------------------------------

_CONSTANT_ATTRS = (("value", None), ("sparse_value", None), ("value_float", np.float32),
                   ("value_floats", np.float32), ("value_int", np.int64),
                   ("value_ints", np.int64))


@op("Constant")
def constant(ctx):
    for name, dtype in _CONSTANT_ATTRS:
        if ctx.has_attr(name):
            value = np.asarray(ctx.attr(name), dtype=dtype)
            if value.dtype.kind in "OSU":
                raise ctx.error("JAX has no string dtype")
            return value
    if ctx.has_attr("value_string") or ctx.has_attr("value_strings"):
        raise ctx.error("JAX has no string dtype")
    raise ctx.error("Constant needs one of the value* attributes")


@op("Identity")
def identity(ctx, x):
    return x


# -- arithmetic -----------------------------------------------------------------------------

def _register_binary(ops: dict) -> None:
    for name, fn in ops.items():
        op(name)(lambda ctx, a, b, fn=fn: fn(a, b))


def _register_unary(ops: dict) -> None:
    for name, fn in ops.items():
        op(name)(lambda ctx, x, fn=fn: fn(jnp.asarray(x)))


_register_binary({"Add": jnp.add, "Sub": jnp.subtract, "Mul": jnp.multiply})


@op("Div")
def div(ctx, a, b):
    """Integer division truncates toward zero (C semantics)."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    if _is_int(a):
        a, b = jnp.broadcast_arrays(a, b.astype(a.dtype))
        return lax.div(a, b)
    return jnp.divide(a, b)


@op("Mod")
def mod(ctx, a, b):
    """``fmod=0``: the result takes the divisor's sign; ``fmod=1``: the dividend's (C fmod)."""
    if ctx.attr("fmod", 0):
        return jnp.fmod(a, b)
    return jnp.mod(a, b)


@op("Pow")
def pow_(ctx, a, b):
    """The result has the base's dtype; mixed-type exponents compute in the wider type."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    if _is_int(a) and _is_int(b):
        return jnp.power(a, b.astype(a.dtype))
    wide = jnp.promote_types(a.dtype, b.dtype)
    return jnp.power(a.astype(wide), b.astype(wide)).astype(a.dtype)


_register_unary({
    "Neg": jnp.negative, "Abs": jnp.abs, "Sign": jnp.sign, "Reciprocal": jnp.reciprocal,
    "Floor": jnp.floor, "Ceil": jnp.ceil, "Round": jnp.round, "Sqrt": jnp.sqrt,
    "Exp": jnp.exp, "Log": jnp.log, "Erf": lax.erf,
    "Sin": jnp.sin, "Cos": jnp.cos, "Tan": jnp.tan, "Asin": jnp.arcsin, "Acos": jnp.arccos,
    "Atan": jnp.arctan, "Sinh": jnp.sinh, "Cosh": jnp.cosh, "Tanh": jnp.tanh,
    "Asinh": jnp.arcsinh, "Acosh": jnp.arccosh, "Atanh": jnp.arctanh,
})


# -- activations ----------------------------------------------------------------------------

_register_unary({
    "Sigmoid": jax.nn.sigmoid, "Softplus": jax.nn.softplus,
    "Softsign": lambda x: x / (1 + jnp.abs(x)),
    "Mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
})


@op("Relu")
def relu(ctx, x):
    return jnp.maximum(x, 0)


@op("LeakyRelu")
def leaky_relu(ctx, x):
    x = jnp.asarray(x)
    return jnp.where(x < 0, x * ctx.attr("alpha", 0.01), x)


@op("PRelu")
def prelu(ctx, x, slope):
    x = jnp.asarray(x)
    return jnp.where(x < 0, x * slope, x).astype(x.dtype)


@op("Elu")
def elu(ctx, x):
    x = jnp.asarray(x)
    return jnp.where(x < 0, ctx.attr("alpha", 1.0) * jnp.expm1(x), x)


@op("Selu")
def selu(ctx, x):
    x = jnp.asarray(x)
    alpha = ctx.attr("alpha", 1.67326319217681884765625)
    gamma = ctx.attr("gamma", 1.05070102214813232421875)
    return gamma * jnp.where(x <= 0, alpha * jnp.expm1(x), x)


@op("Celu")
def celu(ctx, x):
    x = jnp.asarray(x)
    alpha = ctx.attr("alpha", 1.0)
    return jnp.maximum(x, 0) + jnp.minimum(0, alpha * jnp.expm1(x / alpha))


@op("HardSigmoid")
def hard_sigmoid(ctx, x):
    return jnp.clip(ctx.attr("alpha", 0.2) * jnp.asarray(x) + ctx.attr("beta", 0.5), 0, 1)


@op("HardSwish")
def hard_swish(ctx, x):
    x = jnp.asarray(x)
    return x * jnp.clip(x * (1 / 6) + 0.5, 0, 1)


@op("Gelu")
def gelu(ctx, x):
    """``approximate="tanh"`` uses the tanh formula, ``"none"`` the exact erf one."""
    approximate = ctx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise ctx.error(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    x = jnp.asarray(x)
    if approximate == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1 + jnp.tanh(inner))
    return 0.5 * x * (1 + lax.erf(x * (1 / math.sqrt(2))))


@op("Swish")
def swish(ctx, x):
    x = jnp.asarray(x)
    return x * jax.nn.sigmoid(ctx.attr("alpha", 1.0) * x)


@op("ThresholdedRelu")
def thresholded_relu(ctx, x):
    x = jnp.asarray(x)
    return jnp.where(x > ctx.attr("alpha", 1.0), x, 0).astype(x.dtype)


@op("Shrink")
def shrink(ctx, x):
    """Integer inputs are shrunk in floating point and cast back."""
    x = jnp.asarray(x)
    bias, lambd = ctx.attr("bias", 0.0), ctx.attr("lambd", 0.5)
    xf = x.astype(jnp.result_type(float)) if _is_int(x) else x
    out = jnp.where(xf < -lambd, xf + bias, jnp.where(xf > lambd, xf - bias, 0))
    return out.astype(x.dtype)


# -- comparisons, logic, bits ---------------------------------------------------------------

_register_binary({
    "Equal": jnp.equal, "Less": jnp.less, "LessOrEqual": jnp.less_equal,
    "Greater": jnp.greater, "GreaterOrEqual": jnp.greater_equal,
    "And": jnp.logical_and, "Or": jnp.logical_or, "Xor": jnp.logical_xor,
    "BitwiseAnd": jnp.bitwise_and, "BitwiseOr": jnp.bitwise_or, "BitwiseXor": jnp.bitwise_xor,
})
_register_unary({"Not": jnp.logical_not, "BitwiseNot": jnp.bitwise_not, "IsNaN": jnp.isnan})


@op("BitShift")
def bit_shift(ctx, a, b):
    """Shifts of at least the bit width give 0."""
    direction = ctx.attr("direction")
    if direction not in ("LEFT", "RIGHT"):
        raise ctx.error(f"direction must be 'LEFT' or 'RIGHT', got {direction!r}")
    a = jnp.asarray(a)
    b = jnp.asarray(b).astype(a.dtype)
    return jnp.left_shift(a, b) if direction == "LEFT" else jnp.right_shift(a, b)


@op("IsInf")
def is_inf(ctx, x):
    x = jnp.asarray(x)
    out = jnp.zeros(x.shape, dtype=bool)
    if ctx.attr("detect_positive", 1):
        out = out | jnp.isposinf(x)
    if ctx.attr("detect_negative", 1):
        out = out | jnp.isneginf(x)
    return out


@op("Where")
def where(ctx, condition, x, y):
    return jnp.where(condition, x, y)


# -- clipping and variadic ops --------------------------------------------------------------

@op("Clip")
def clip(ctx, x, lo=None, hi=None):
    """Bounds are the ``min``/``max`` attributes before opset 11 and optional inputs after."""
    x = jnp.asarray(x)
    if ctx.opset < 11:
        lo = ctx.attr("min", -3.4028234663852886e38)
        hi = ctx.attr("max", 3.4028234663852886e38)
    if lo is not None:
        x = jnp.maximum(x, jnp.asarray(lo, dtype=x.dtype))
    if hi is not None:
        x = jnp.minimum(x, jnp.asarray(hi, dtype=x.dtype))
    return x


def _register_variadic(ops: dict) -> None:
    """Ops folding ``fn`` over any number of inputs, with multidirectional broadcasting."""
    for name, fn in ops.items():
        op(name)(lambda ctx, *xs, fn=fn: functools.reduce(fn, xs))


_register_variadic({"Max": jnp.maximum, "Min": jnp.minimum, "Sum": jnp.add})


@op("Mean")
def mean(ctx, *xs):
    first = jnp.asarray(xs[0])
    return (functools.reduce(jnp.add, xs) / len(xs)).astype(first.dtype)


# -- casts ----------------------------------------------------------------------------------

def _cast(ctx, x, to: int):
    """ONNX Cast: ``saturate`` clamps float8 overflow; FLOAT8E8M0 follows ``round_mode``.

    Floats go to integer types narrower than 32 bits through int32, so that out-of-range
    values wrap (as numpy and C casts do) rather than saturate; 2- and 4-bit integer
    targets follow :func:`_to_sub_byte_int`.
    """
    dtype = _target_dtype(ctx, to)
    saturate = bool(ctx.attr("saturate", 1))
    x = jnp.asarray(x)
    if x.dtype == dtype:
        return x
    if to in _SUB_BYTE_INTS:
        return _to_sub_byte_int(ctx, x, to, dtype)
    if to == TensorProto.FLOAT8E8M0:
        return _to_e8m0(ctx, x, saturate, ctx.attr("round_mode", "up"))
    if to in _FLOAT8 and saturate:
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)
        info = ml_dtypes.finfo(dtype)
        x = jnp.clip(x, float(info.min), float(info.max))
    if (jnp.issubdtype(x.dtype, jnp.floating) and jnp.issubdtype(dtype, jnp.integer)
            and dtype.itemsize < 4):
        x = x.astype(jnp.int32)
    return x.astype(dtype)


def _to_sub_byte_int(ctx, x, to: int, dtype: np.dtype):
    """``x`` cast to the 2- or 4-bit integer type ``to``, independently of ml_dtypes.

    A float is truncated toward zero; one whose truncation is out of range, NaN or infinite
    (undefined in the spec) gives 0, as ONNX's reference does with ml_dtypes 0.7. An integer
    keeps its low bits, read as two's complement for a signed target; a bool gives 0 or 1.
    """
    lo, hi = _QUANT_RANGES[to]
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise ctx.error(f"Cast from {x.dtype} to {dtype} is not defined")
    if jnp.issubdtype(x.dtype, jnp.floating):
        t = jnp.trunc(x.astype(jnp.float64 if x.dtype == jnp.float64 else jnp.float32))
        return jnp.where((t >= lo) & (t <= hi), t, 0).astype(jnp.int32).astype(dtype)
    if x.dtype.itemsize < 4:  # bool and narrow integers: widened exactly
        x = x.astype(jnp.int32)
    low = (x & (hi - lo)).astype(jnp.int32)  # hi - lo is 2**bits - 1
    return jnp.where(low > hi, low - (hi - lo + 1), low).astype(dtype)


def _to_e8m0(ctx, x, saturate: bool, round_mode: str):
    """The float32 exponent, rounded by ``round_mode`` ("up", "down" or "nearest")."""
    bits = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    exponent = (bits >> 23) & 0xFF
    special = exponent == 0xFF
    if round_mode == "up":
        round_up = (bits & 0x7FFFFF) > 0
    elif round_mode == "nearest":
        guard = (bits & 0x400000) > 0
        rest = (bits & 0x3FFFFF) > 0
        round_up = guard & (rest | (exponent > 0))
    elif round_mode == "down":
        round_up = jnp.zeros_like(special)
    else:
        raise ctx.error(f"round_mode must be 'up', 'down' or 'nearest', got {round_mode!r}")
    round_up = round_up & ~special
    if saturate:
        round_up = round_up & (exponent != 0xFE)
    exponent = jnp.where(special, 0xFF, exponent + round_up.astype(jnp.uint32))
    return lax.bitcast_convert_type(exponent.astype(jnp.uint8), ml_dtypes.float8_e8m0fnu)


@op("Cast")
def cast(ctx, x):
    return _cast(ctx, x, ctx.attr("to"))


@op("CastLike")
def cast_like(ctx, x, like):
    return _cast(ctx, x, onnx_elem_type(like.dtype))


@op("BitCast")
def bit_cast(ctx, x):
    """Reinterprets the bits; a bool target is ``x != 0`` (JAX bools hold one bit)."""
    dtype = _target_dtype(ctx, ctx.attr("to"))
    x = jnp.asarray(x)
    if x.dtype.itemsize != dtype.itemsize:
        raise ctx.error(f"BitCast needs equal widths, got {x.dtype} -> {dtype}")
    if dtype == np.bool_:
        return x != 0
    if x.dtype == np.bool_:
        return x.astype(dtype)
    return lax.bitcast_convert_type(x, dtype)


# -- quantization ---------------------------------------------------------------------------

_QUANT_RANGES = {TensorProto.UINT8: (0, 255), TensorProto.INT8: (-128, 127),
                 TensorProto.UINT16: (0, 65535), TensorProto.INT16: (-32768, 32767),
                 TensorProto.UINT4: (0, 15), TensorProto.INT4: (-8, 7),
                 TensorProto.UINT2: (0, 3), TensorProto.INT2: (-2, 1)}


def _quant_param(ctx, value, shape, axis: int, block_size: int):
    """Scale or zero point broadcast to ``shape``: per tensor, per ``axis``, or per block."""
    value = jnp.asarray(value)
    if value.size == 1:
        return value.reshape(())
    if not -len(shape) <= axis < len(shape):
        raise ctx.error(f"axis {axis} is out of range for rank {len(shape)}")
    axis %= len(shape)
    if not block_size:
        if value.ndim != 1 or value.shape[0] != shape[axis]:
            raise ctx.error(f"per-axis scale of shape {value.shape} does not match "
                            f"dimension {axis} of {shape}")
        return value.reshape([-1 if d == axis else 1 for d in range(len(shape))])
    if block_size < 0:
        raise ctx.error(f"block_size must be positive, got {block_size}")
    value = jnp.repeat(value, block_size, axis=axis)
    value = lax.slice_in_dim(value, 0, shape[axis], axis=axis)
    if value.shape != tuple(shape):
        raise ctx.error(f"blocked scale of shape {value.shape} does not match {shape}")
    return value


@op("QuantizeLinear")
def quantize_linear(ctx, x, scale, zero_point=None):
    """Integer targets round half to even and clamp; float8 targets obey ``saturate``."""
    x = jnp.asarray(x)
    axis, block_size = ctx.attr("axis", 1), ctx.attr("block_size", 0)
    out_type = ctx.attr("output_dtype", 0)
    if zero_point is not None:
        zp_type = onnx_elem_type(zero_point.dtype)
        if out_type and out_type != zp_type:
            raise ctx.error(f"output_dtype {out_type} differs from the zero point's {zp_type}")
        out_type = zp_type
    out_type = out_type or TensorProto.UINT8
    dtype = _target_dtype(ctx, out_type)
    scale = _quant_param(ctx, scale, x.shape, axis, block_size)
    precision = ctx.attr("precision", 0)
    if precision:
        wide = _target_dtype(ctx, precision)
        y = x.astype(wide) / scale.astype(wide)
    else:
        y = x / scale
    if zero_point is not None:
        zero_point = _quant_param(ctx, zero_point, x.shape, axis, block_size)
    if out_type in _QUANT_RANGES:
        yi = jnp.rint(y).astype(jnp.int32)
        if zero_point is not None:
            yi = yi + zero_point.astype(jnp.int32)
        lo, hi = _QUANT_RANGES[out_type]
        return jnp.clip(yi, lo, hi).astype(dtype)
    if out_type in _FLOAT8:
        if ctx.attr("saturate", 1):
            info = ml_dtypes.finfo(dtype)
            y = jnp.clip(y, float(info.min), float(info.max))
        return y.astype(dtype)
    if out_type in _SMALL_FLOATS:
        if zero_point is not None:
            y = y + zero_point.astype(y.dtype)
        info = ml_dtypes.finfo(dtype)
        return jnp.clip(y, float(info.min), float(info.max)).astype(dtype)
    raise ctx.error(f"{dtype} is not a quantized type")


@op("DequantizeLinear")
def dequantize_linear(ctx, x, scale, zero_point=None):
    """``(x - zero_point) * scale`` in float32, returned in the scale's (or output_dtype's) type.

    Float8 and float4 inputs ignore the zero point, which must be zero.
    """
    x = jnp.asarray(x)
    axis, block_size = ctx.attr("axis", 1), ctx.attr("block_size", 0)
    out_type = ctx.attr("output_dtype", 0)
    dtype = _target_dtype(ctx, out_type) if out_type else jnp.asarray(scale).dtype
    x_type = onnx_elem_type(x.dtype)
    dx = x.astype(jnp.float32)
    if zero_point is not None and x_type not in _FLOAT8 | {TensorProto.FLOAT4E2M1}:
        zero_point = _quant_param(ctx, zero_point, x.shape, axis, block_size)
        dx = dx - zero_point.astype(jnp.float32)
    y = dx * _quant_param(ctx, scale, x.shape, axis, block_size)
    return y.astype(dtype)
