"""The standard-ONNX Threefry ops, run by onnxruntime, draw exactly the bits ``jax.random``
draws: bits of every width, split, fold_in and seeding, for fresh keys and shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from bbjax.compiler.threefry import decompose
from bbjax.errors import CompileError
from bbjax.onnx import domains

SETTINGS = settings(max_examples=8, deadline=None)
SHAPES = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)
BATCH = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


def _run(op_type: str, inputs: dict[str, np.ndarray], out_dtype, out_shape, **attrs):
    node = helper.make_node(op_type, list(inputs), ["out"], domain=domains.RANDOM,
                            impl="threefry2x32")
    node.attribute.extend(helper.make_attribute(k, v, attr_type=onnx.AttributeProto.INTS)
                          if isinstance(v, list) else helper.make_attribute(k, v)
                          for k, v in attrs.items())
    values = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype),
                                            list(a.shape)) for n, a in inputs.items()]
    graph = helper.make_graph(
        decompose(node, {v.name: v for v in values}, "t."), "threefry", values,
        [helper.make_tensor_value_info("out", helper.np_dtype_to_tensor_dtype(
            np.dtype(out_dtype)), list(out_shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def _keys(seed: int, batch: tuple[int, ...]) -> jax.Array:
    keys = jax.random.split(jax.random.key(seed), int(np.prod(batch, dtype=int)))
    return keys.reshape(batch)


@SETTINGS
@given(st.integers(0, 2**31 - 1), BATCH, SHAPES, st.sampled_from([8, 16, 32]))
def test_bits(seed, batch, shape, width):
    keys = _keys(seed, batch)
    dtype = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32}[width]
    draw = lambda k: jax.random.bits(k, shape, dtype)
    for _ in batch:
        draw = jax.vmap(draw)
    got = _run("RandomBits", {"key": np.asarray(jax.random.key_data(keys))}, dtype,
               (*batch, *shape), bit_width=width, shape=list(shape))
    np.testing.assert_array_equal(got, np.asarray(draw(keys)))


def test_64_bit_draws():
    with jax.enable_x64(True):
        key = jax.random.key(3)
        want = np.asarray(jax.random.bits(key, (4, 3), jnp.uint64))
    got = _run("RandomBits", {"key": np.asarray(jax.random.key_data(key))}, np.uint64, (4, 3),
               bit_width=64, shape=[4, 3])
    np.testing.assert_array_equal(got, want)


@SETTINGS
@given(st.integers(0, 2**31 - 1), BATCH, SHAPES)
def test_split(seed, batch, shape):
    keys = _keys(seed, batch)
    split = lambda k: jax.random.key_data(jax.random.split(k, shape))
    for _ in batch:
        split = jax.vmap(split)
    got = _run("RandomSplit", {"key": np.asarray(jax.random.key_data(keys))}, np.uint32,
               (*batch, *shape, 2), shape=list(shape))
    np.testing.assert_array_equal(got, np.asarray(split(keys)))


@SETTINGS
@given(st.integers(0, 2**31 - 1), st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4))
def test_fold_in(seed, messages):
    keys = _keys(seed, (len(messages),))
    msgs = np.asarray(messages, np.uint32)
    want = jax.vmap(lambda k, m: jax.random.key_data(jax.random.fold_in(k, m)))(keys, msgs)
    got = _run("RandomFoldIn", {"key": np.asarray(jax.random.key_data(keys)), "msgs": msgs},
               np.uint32, (len(messages), 2))
    np.testing.assert_array_equal(got, np.asarray(want))


@SETTINGS
@given(st.lists(st.integers(-2**31, 2**31 - 1), min_size=1, max_size=4))
def test_seed(seeds):
    seeds = np.asarray(seeds, np.int32)
    want = jax.vmap(lambda s: jax.random.key_data(jax.random.key(s)))(seeds)
    got = _run("RandomSeed", {"seeds": seeds}, np.uint32, (len(seeds), 2))
    np.testing.assert_array_equal(got, np.asarray(want))


def test_another_prng_is_refused():
    node = helper.make_node("RandomBits", ["key"], ["out"], domain=domains.RANDOM, impl="rbg",
                            bit_width=32, shape=[2])
    key = helper.make_tensor_value_info("key", TensorProto.UINT32, [4])
    with pytest.raises(CompileError, match="only threefry2x32"):
        decompose(node, {"key": key}, "t.")
