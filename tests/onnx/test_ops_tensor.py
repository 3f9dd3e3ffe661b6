"""Tensor and sequence ops of the ONNX op table, against numpy on random inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from bbjax.errors import LoweringError
from bbjax.onnx import lower

F = TensorProto.FLOAT
I64 = TensorProto.INT64


def single_node(op_type, inputs, outputs, *, consts=None, opset=21, name="node0", **attrs):
    """A model running one node; ``inputs`` / ``outputs`` are ``(name, elem_type, rank)`` and
    ``consts`` maps input names to initializer arrays."""
    consts = consts or {}
    node = helper.make_node(op_type, [n for n, *_ in inputs] + list(consts),
                            [n for n, *_ in outputs], name=name, **attrs)
    return graph_model([node], inputs, outputs, consts, opset)


def graph_model(nodes, inputs, outputs, consts, opset=21):
    initializers = [numpy_helper.from_array(np.asarray(v), n) for n, v in consts.items()]
    graph = helper.make_graph(nodes, "g", [value_info(*v) for v in inputs],
                              [value_info(*v) for v in outputs], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def value_info(name, elem_type, rank):
    """A tensor of known rank and symbolic dims (so vmap may batch it)."""
    return helper.make_tensor_value_info(name, elem_type, [f"{name}{i}" for i in range(rank)])


def check(model, args, expected, *, batch=True):
    """jit, and vmap over a leading batch of the args, both reproduce ``expected``."""
    fn = lower(model)
    for out in (jax.jit(fn)(*args),):
        for got, want in zip(out, expected):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
    if batch:
        stacked = [jnp.stack([a, a[::-1]]) for a in args]
        out = jax.vmap(fn)(*stacked)
        for got, want in zip(out, expected):
            np.testing.assert_allclose(np.asarray(got)[0], want, rtol=1e-6)


@pytest.fixture
def rng():
    return np.random.default_rng()


def test_reshape_copies_zero_dims_and_infers_minus_one(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    model = single_node("Reshape", [("x", F, 3)], [("y", F, 2)],
                        consts={"shape": np.array([0, -1])})
    check(model, [x], [x.reshape(2, 12)])


def test_shape_feeds_reshape_statically_under_jit_and_vmap(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], start=-1),
        helper.make_node("Concat", ["s", "m1"], ["t"], axis=0),
        helper.make_node("Reshape", ["x", "t"], ["y"]),
    ]
    model = graph_model(nodes, [("x", F, 2)], [("y", F, 2)], {"m1": np.array([-1])})
    check(model, [x], [x.reshape(4, 3)])


def test_slice_negative_steps_and_clamping(rng):
    x = rng.standard_normal((5, 6)).astype(np.float32)
    model = single_node("Slice", [("x", F, 2)], [("y", F, 2)], consts={
        "starts": np.array([-1, 100]), "ends": np.array([-2**63, 1]),
        "axes": np.array([0, 1]), "steps": np.array([-2, -3])})
    check(model, [x], [x[::-2, 100:1:-3]])


def test_gather_negative_indices(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    idx = rng.integers(-5, 5, size=(2, 3))
    model = single_node("Gather", [("x", F, 2), ("i", I64, 2)], [("y", F, 3)], axis=1)
    check(model, [x, idx], [np.take(x, idx, axis=1)])


def test_gather_elements_and_scatter_elements_add(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    idx = rng.integers(-4, 4, size=(3, 4))
    upd = rng.standard_normal((3, 4)).astype(np.float32)
    model = single_node("GatherElements", [("x", F, 2), ("i", I64, 2)], [("y", F, 2)], axis=1)
    check(model, [x, idx], [np.take_along_axis(x, idx % 4, axis=1)])
    want = x.copy()
    for r in range(3):
        for c in range(4):
            want[r, idx[r, c] % 4] += upd[r, c]
    model = single_node("ScatterElements", [("x", F, 2), ("i", I64, 2), ("u", F, 2)], [("y", F, 2)],
                        axis=1, reduction="add")
    check(model, [x, idx, upd], [want])


def test_gather_nd_with_batch_dims(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    idx = rng.integers(0, 3, size=(2, 5, 1))
    model = single_node("GatherND", [("x", F, 3), ("i", I64, 3)], [("y", F, 3)], batch_dims=1)
    check(model, [x, idx], [np.stack([x[b][idx[b, :, 0]] for b in range(2)])], batch=False)


def test_top_k_breaks_ties_by_lower_index(rng):
    x = rng.integers(0, 3, size=(4, 6)).astype(np.float32)
    model = single_node("TopK", [("x", F, 2)], [("v", F, 2), ("i", I64, 2)],
                        consts={"k": np.array([3])})
    order = np.argsort(-x, axis=1, kind="stable")[:, :3]
    check(model, [x], [np.take_along_axis(x, order, axis=1), order])
    smallest = single_node("TopK", [("x", F, 2)], [("v", F, 2), ("i", I64, 2)],
                           consts={"k": np.array([2])}, largest=0, axis=0)
    order = np.argsort(x, axis=0, kind="stable")[:2]
    check(smallest, [x], [np.take_along_axis(x, order, axis=0), order])


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes(rng, mode):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    model = single_node("Pad", [("x", F, 2)], [("y", F, 2)], mode=mode,
                        consts={"pads": np.array([1, 2, 2, 1])})
    kwargs = {"constant_values": 0.0} if mode == "constant" else {}
    check(model, [x], [np.pad(x, [(1, 2), (2, 1)], mode=mode, **kwargs)])


def test_split_by_num_outputs_and_by_sizes(rng):
    x = rng.standard_normal((7, 2)).astype(np.float32)
    model = single_node("Split", [("x", F, 2)], [("a", F, 2), ("b", F, 2), ("c", F, 2)], opset=18,
                        num_outputs=3)
    check(model, [x], [x[:3], x[3:6], x[6:]])
    model = single_node("Split", [("x", F, 2)], [("a", F, 2), ("b", F, 2)], axis=1,
                        consts={"split": np.array([1, 1])})
    check(model, [x], [x[:, :1], x[:, 1:]])


def test_one_hot_wraps_negative_and_drops_out_of_range(rng):
    idx = rng.integers(-6, 6, size=(5,))
    model = single_node("OneHot", [("i", I64, 1)], [("y", F, 2)], axis=0,
                        consts={"depth": np.array(4), "values": np.array([-1.0, 2.0], np.float32)})
    want = np.full((4, 5), -1.0, np.float32)
    for j, v in enumerate(idx):
        if -4 <= v < 4:
            want[v % 4, j] = 2.0
    check(model, [idx], [want])


def test_sequence_round_trip(rng):
    x = rng.standard_normal((5, 3)).astype(np.float32)
    nodes = [
        helper.make_node("SplitToSequence", ["x"], ["s"], axis=0, keepdims=0),
        helper.make_node("SequenceErase", ["s", "zero"], ["t"]),
        helper.make_node("SequenceLength", ["t"], ["n"]),
        helper.make_node("ConcatFromSequence", ["t"], ["y"], axis=1, new_axis=1),
        helper.make_node("SequenceAt", ["t", "p"], ["z"]),
    ]
    model = graph_model(nodes, [("x", F, 2), ("p", I64, 0)],
                        [("y", F, 2), ("n", I64, 0), ("z", F, 1)], {"zero": np.array(0)})
    check(model, [x, np.array(-3)], [x[1:].T, np.int64(4), x[2]], batch=False)


def test_data_dependent_ops_run_eagerly_but_not_under_jit(rng):
    x = rng.integers(0, 2, size=(3, 4)).astype(np.float32)
    model = single_node("NonZero", [("x", F, 2)], [("y", I64, 2)], name="nz")
    fn = lower(model)
    np.testing.assert_array_equal(np.asarray(fn(x)[0]), np.array(np.nonzero(x)))
    with pytest.raises(LoweringError, match="'nz'.*known at trace time"):
        jax.jit(fn)(x)


def test_traced_reshape_shape_is_rejected_naming_the_node():
    model = single_node("Reshape", [("x", F, 2), ("shape", I64, 1)], [("y", F, 2)],
                        name="reshape_me")
    fn = jax.jit(lower(model))
    with pytest.raises(LoweringError, match="'reshape_me'.*shape input must be known"):
        fn(np.zeros((2, 3), np.float32), np.array([3, 2]))


def test_gather_bad_axis_and_out_of_range_indices_are_rejected():
    x = np.zeros((2, 3), np.float32)
    bad_axis = single_node("Gather", [("x", F, 2), ("i", I64, 1)], [("y", F, 2)], axis=2, name="g")
    with pytest.raises(LoweringError, match="'g'.*axis 2 is out of range"):
        lower(bad_axis)(x, np.array([0]))
    bad_index = single_node("Gather", [("x", F, 2)], [("y", F, 2)], consts={"i": np.array([3])},
                            name="g2")
    with pytest.raises(LoweringError, match="'g2'.*indices must lie in"):
        lower(bad_index)(x)
