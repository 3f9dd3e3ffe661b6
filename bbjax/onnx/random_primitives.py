"""PRNG primitives on raw key data, the exportable form of ``jax.random``.

JAX's key operations (``random_bits``, ``random_split``, ``random_fold_in``,
``random_seed``) act on typed key arrays, which ONNX cannot carry. Export rewrites them
into these primitives, whose key operands are the raw ``uint32`` key data (trailing
dimension = the PRNG implementation's key size) and whose ``impl`` parameter names the PRNG
implementation. Each one computes exactly what the ``jax.random`` call it replaces
computes, so samples are bit-identical before and after the ONNX round trip.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir


def impl_name(key_dtype: Any) -> str:
    """The implementation name of a typed key dtype (``threefry2x32``, ``rbg``…)."""
    return key_dtype._impl.name


@functools.cache
def _key_shape(name: str) -> tuple[int, ...]:
    """Shape of one key's raw data for the PRNG implementation ``name``."""
    try:
        out = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=name)))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"unknown PRNG implementation {name!r}") from exc
    return tuple(out.shape)


def _batch_shape(data_shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    return tuple(data_shape[: len(data_shape) - len(_key_shape(name))])


def _wrap(data: jax.Array, impl: str) -> jax.Array:
    return jax.random.wrap_key_data(data, impl=impl)


def _vmapped(fn, keys: jax.Array, *others: jax.Array) -> jax.Array:
    """Apply a scalar-key ``fn`` to every key of a key array (same as JAX's batching rule)."""
    if keys.ndim == 0:
        return fn(keys, *others)
    flat = keys.reshape(-1)
    others = [jnp.broadcast_to(o, keys.shape).reshape(-1) for o in others]
    out = jax.vmap(fn)(flat, *others)
    return out.reshape(keys.shape + out.shape[1:])


def _define(name: str, impl, abstract_eval) -> Primitive:
    p = Primitive(name)
    p.def_impl(impl)
    p.def_abstract_eval(abstract_eval)
    mlir.register_lowering(p, mlir.lower_fun(impl, multiple_results=False))

    def batch_rule(args, dims, **params):
        # every primitive here maps over leading batch dimensions of its operands
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not batching.not_mapped)
        moved = [jnp.broadcast_to(a, (size,) + a.shape) if d is batching.not_mapped
                 else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims)]
        return p.bind(*moved, **params), 0

    batching.primitive_batchers[p] = batch_rule
    return p


def _bits_impl(data, *, impl, bit_width, shape):
    dtype = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}[bit_width]
    return _vmapped(lambda k: jax.random.bits(k, shape, dtype), _wrap(data, impl))


def _bits_abstract(data, *, impl, bit_width, shape):
    dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}[bit_width]
    return jax.core.ShapedArray(_batch_shape(data.shape, impl) + tuple(shape), dtype)


def _split_impl(data, *, impl, shape):
    keys = _vmapped(lambda k: jax.random.split(k, shape), _wrap(data, impl))
    return jax.random.key_data(keys)


def _split_abstract(data, *, impl, shape):
    return jax.core.ShapedArray(_batch_shape(data.shape, impl) + tuple(shape)
                                + _key_shape(impl), data.dtype)


def _fold_in_impl(data, msgs, *, impl):
    keys = _wrap(data, impl)
    msgs = jnp.broadcast_to(msgs, keys.shape)
    return jax.random.key_data(_vmapped(jax.random.fold_in, keys, msgs))


def _fold_in_abstract(data, msgs, *, impl):
    return jax.core.ShapedArray(data.shape, data.dtype)


def _seed_impl(seeds, *, impl):
    keys = _vmapped(lambda s: jax.random.key(s, impl=impl), seeds)
    return jax.random.key_data(keys)


def _seed_abstract(seeds, *, impl):
    return jax.core.ShapedArray(tuple(seeds.shape) + _key_shape(impl), np.uint32)


random_bits_p = _define("bbjax_random_bits", _bits_impl, _bits_abstract)
random_split_p = _define("bbjax_random_split", _split_impl, _split_abstract)
random_fold_in_p = _define("bbjax_random_fold_in", _fold_in_impl, _fold_in_abstract)
random_seed_p = _define("bbjax_random_seed", _seed_impl, _seed_abstract)

# ONNX op type of each primitive (domain bbjax.onnx.domains.RANDOM).
ONNX_OP_TYPES = {
    random_bits_p: "RandomBits",
    random_split_p: "RandomSplit",
    random_fold_in_p: "RandomFoldIn",
    random_seed_p: "RandomSeed",
}
