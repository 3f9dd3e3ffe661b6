"""The bbjax domains: key-based sampling (lowered to ``jax.random``) and extra lax primitives."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from bbjax.onnx import domains
from bbjax.onnx import random_primitives as rp
from bbjax.onnx.ops.registry import op


def _key_data(ctx, value):
    if value is None:
        raise ctx.error("key input is required")
    return jnp.asarray(value, jnp.uint32)


@op("RandomBits", domain=domains.RANDOM, foldable=False)
def random_bits(ctx, key):
    return rp.random_bits_p.bind(_key_data(ctx, key), impl=ctx.attr("impl"),
                                 bit_width=ctx.attr("bit_width"),
                                 shape=tuple(ctx.attr("shape", [])))


@op("RandomSplit", domain=domains.RANDOM, foldable=False)
def random_split(ctx, key):
    return rp.random_split_p.bind(_key_data(ctx, key), impl=ctx.attr("impl"),
                                  shape=tuple(ctx.attr("shape")))


@op("RandomFoldIn", domain=domains.RANDOM, foldable=False)
def random_fold_in(ctx, key, msgs):
    return rp.random_fold_in_p.bind(_key_data(ctx, key), jnp.asarray(msgs, jnp.uint32),
                                    impl=ctx.attr("impl"))


@op("RandomSeed", domain=domains.RANDOM, foldable=False)
def random_seed(ctx, seeds):
    return rp.random_seed_p.bind(jnp.asarray(seeds), impl=ctx.attr("impl"))


@op("BitcastConvert", domain=domains.LAX)
def bitcast_convert(ctx, x):
    """``lax.bitcast_convert_type`` to the ONNX element type ``to``."""
    from bbjax.onnx.dtypes import jax_dtype
    return lax.bitcast_convert_type(x, jax_dtype(ctx.attr("to")))


@op("ErfInv", domain=domains.LAX)
def erf_inv(ctx, x):
    """``lax.erf_inv``: bit-identical to the JAX function that was exported."""
    return lax.erf_inv(x)
