"""Matrix products and determinants: MatMul, Gemm, Einsum, MatMulInteger, Det."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from bbjax.onnx.ops.registry import op

_HIGHEST = lax.Precision.HIGHEST


def _accumulator(dtype):
    """16-bit floats accumulate in float32 and round once, as numpy does."""
    if jnp.issubdtype(dtype, jnp.floating) and jnp.dtype(dtype).itemsize < 4:
        return jnp.float32
    return None


@op("MatMul")
def matmul(ctx, a, b):
    return jnp.matmul(a, b, precision=_HIGHEST,
                      preferred_element_type=_accumulator(a.dtype)).astype(a.dtype)


@op("Gemm")
def gemm(ctx, a, b, c=None):
    """``alpha * A' @ B' + beta * C`` with C broadcast (unidirectionally) to the product."""
    if ctx.attr("transA", 0):
        a = a.T
    if ctx.attr("transB", 0):
        b = b.T
    dtype = a.dtype
    alpha = ctx.attr("alpha", 1.0)
    beta = ctx.attr("beta", 1.0)
    y = jnp.matmul(a, b, precision=_HIGHEST, preferred_element_type=_accumulator(dtype))
    if alpha != 1.0:
        y = y * jnp.asarray(alpha, dtype=dtype)
    if c is not None and beta != 0.0:
        y = y + (c if beta == 1.0 else c * jnp.asarray(beta, dtype=dtype))
    return y.astype(dtype)


@op("Einsum")
def einsum(ctx, *operands):
    equation = ctx.attr("equation").replace(" ", "")
    dtype = operands[0].dtype
    return jnp.einsum(equation, *operands, precision=_HIGHEST,
                      preferred_element_type=_accumulator(dtype)).astype(dtype)


@op("MatMulInteger")
def matmul_integer(ctx, a, b, a_zero_point=None, b_zero_point=None):
    """int32 ``(A - a_zp) @ (B - b_zp)``; a 1-D ``a_zero_point`` is per row of A."""
    a = a.astype(jnp.int32)
    b = b.astype(jnp.int32)
    if a_zero_point is not None:
        zp = jnp.asarray(a_zero_point).astype(jnp.int32)
        if zp.ndim == 1 and zp.shape[0] > 1:
            zp = zp[:, None]
        a = a - zp
    if b_zero_point is not None:
        b = b - jnp.asarray(b_zero_point).astype(jnp.int32)
    return jnp.matmul(a, b, preferred_element_type=jnp.int32)


@op("Det")
def det(ctx, x):
    return jnp.linalg.det(x).astype(x.dtype)
