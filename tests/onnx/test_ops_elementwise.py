"""Elementwise and reduction ops of the ONNX op table, against numpy float64 on random inputs."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from bbjax.errors import LoweringError
from bbjax.onnx import lower

F = TensorProto.FLOAT
ERF = np.vectorize(math.erf)


def single_node(op_type, n_inputs, *, consts=None, opset=21, out_type=F, in_type=F,
                rank=2, out_rank=None, **attrs):
    """A model running one node on ``n_inputs`` graph inputs (rank ``rank``) then ``consts``;
    dims are symbolic so that vmap may batch them."""
    consts = consts or {}
    names = [f"x{i}" for i in range(n_inputs)]
    node = helper.make_node(op_type, names + list(consts), ["y"], **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, in_type, [f"{n}_{d}" for d in range(rank)])
         for n in names],
        [helper.make_tensor_value_info("y", out_type, [f"y_{d}" for d in range(
            rank if out_rank is None else out_rank)])],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def check(model, args, want, rtol=1e-5, atol=1e-6):
    """The jitted function matches ``want``; vmap over a batch of two matches per-row calls."""
    fn = jax.jit(lower(model))
    got = fn(*args)[0]
    assert got.dtype == want.dtype
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol)
    others = [np.flip(a, axis=0).copy() for a in args]
    batched = jax.jit(jax.vmap(lower(model)))(*[np.stack([a, b]) for a, b in zip(args, others)])[0]
    np.testing.assert_allclose(np.asarray(batched[0]), np.asarray(got), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(batched[1]), np.asarray(fn(*others)[0]), rtol=1e-6)


@pytest.fixture
def rng():
    return np.random.default_rng()


def normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


UNARY = [
    ("Gelu", {"approximate": "tanh"}, 20, lambda x: 0.5 * x * (1 + np.tanh(
        math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    ("Gelu", {}, 20, lambda x: 0.5 * x * (1 + ERF(x / math.sqrt(2)))),
    ("Selu", {"alpha": 1.5, "gamma": 2.0}, 21,
     lambda x: 2.0 * np.where(x > 0, x, 1.5 * np.expm1(x))),
    ("HardSigmoid", {}, 21, lambda x: np.clip(0.2 * x + 0.5, 0, 1)),
    ("Mish", {}, 21, lambda x: x * np.tanh(np.log1p(np.exp(x)))),
    ("Celu", {"alpha": 0.5}, 21,
     lambda x: np.maximum(x, 0) + np.minimum(0, 0.5 * np.expm1(x / 0.5))),
    ("Shrink", {"bias": 0.25, "lambd": 0.5}, 21,
     lambda x: np.where(x < -0.5, x + 0.25, np.where(x > 0.5, x - 0.25, 0))),
    ("Round", {}, 21, np.round),
    ("Softmax", {"axis": 0}, 13, lambda x: _softmax(x, 0)),
    ("Softmax", {"axis": 1}, 11,  # opset < 13: flattened to 2-D at the axis
     lambda x: _softmax(x.reshape(x.shape[0], -1), 1).reshape(x.shape)),
    ("LogSoftmax", {}, 13, lambda x: np.log(_softmax(x, -1))),
    ("Hardmax", {"axis": 1}, 13, lambda x: (x == x.max(1, keepdims=True)).astype(np.float64)),
    ("ReduceL2", {"axes": [1]}, 13, lambda x: np.sqrt((x * x).sum(1, keepdims=True))),
]


@pytest.mark.parametrize("op_type,attrs,opset,ref", UNARY, ids=[f"{c[0]}-{c[2]}" for c in UNARY])
def test_unary_ops_match_numpy(rng, op_type, attrs, opset, ref):
    x = normal(rng, 4, 3, 5) * 2
    if op_type == "Round":
        x = np.round(x * 2) / 2  # exact halves: round half to even
    model = single_node(op_type, 1, opset=opset, rank=3, **attrs)
    check(model, [x], ref(x.astype(np.float64)).astype(np.float32))


def test_integer_div_truncates_and_mod_follows_fmod(rng):
    a = rng.integers(-50, 50, (3, 4)).astype(np.int32)
    b = rng.choice([-7, -3, 2, 5], (3, 4)).astype(np.int32)
    int32 = TensorProto.INT32
    div = single_node("Div", 2, in_type=int32, out_type=int32)
    check(div, [a, b], np.trunc(a / b).astype(np.int32))
    for fmod, ref in ((0, np.mod), (1, np.fmod)):
        mod = single_node("Mod", 2, in_type=int32, out_type=int32, fmod=fmod)
        check(mod, [a, b], ref(a, b))


def test_pow_clip_where_and_variadic_mean(rng):
    x, y = normal(rng, 3, 4), normal(rng, 3, 4)
    check(single_node("Pow", 1, consts={"e": np.array([1, 2, 3, 4], np.int64)}),
          [x], (x.astype(np.float64) ** np.array([1, 2, 3, 4])).astype(np.float32))
    clip = single_node("Clip", 1, consts={"lo": np.float32(-0.5), "hi": np.float32(0.25)},
                       opset=13)
    check(clip, [x], np.clip(x, -0.5, 0.25))
    where = single_node("Where", 0, consts={"c": x > y, "a": x, "b": y})
    np.testing.assert_array_equal(np.asarray(lower(where)()[0]), np.where(x > y, x, y))
    mean = single_node("Mean", 2, consts={"z": np.float32(3.0)})
    check(mean, [x, y], ((x.astype(np.float64) + y + 3) / 3).astype(np.float32))


def test_reductions_scans_and_arg_reductions(rng):
    x = normal(rng, 3, 4, 5)
    axes = {"axes": np.array([0, -1], np.int64)}
    lse = single_node("ReduceLogSumExp", 1, consts=axes, opset=18, rank=3, out_rank=1,
                      keepdims=0)
    x64 = x.astype(np.float64)
    check(lse, [x], np.log(np.exp(x64).sum(axis=(0, 2))).astype(np.float32))
    noop = single_node("ReduceSumSquare", 1, consts={"axes": np.zeros(0, np.int64)}, opset=18,
                       rank=3, noop_with_empty_axes=1)
    check(noop, [x], np.square(x))
    cumsum = single_node("CumSum", 1, consts={"axis": np.array(1, np.int64)}, opset=14,
                         rank=3, exclusive=1, reverse=1)
    check(cumsum, [x], (np.flip(np.cumsum(np.flip(x64, 1), 1), 1) - x64).astype(np.float32))
    ties = np.repeat(normal(rng, 3, 1), 4, axis=1)
    argmax = single_node("ArgMax", 1, out_type=TensorProto.INT64, axis=1, select_last_index=1)
    got = np.asarray(jax.jit(lower(argmax))(ties)[0])
    np.testing.assert_array_equal(got, np.full((3, 1), 3))


def test_quantize_dequantize_per_axis_round_trip(rng):
    x = normal(rng, 2, 3, 4)
    scale = np.array([0.02, 0.05, 0.1], np.float32)
    zero = np.array([128, 100, 140], np.uint8)
    q = single_node("QuantizeLinear", 1, consts={"s": scale, "z": zero}, rank=3,
                    out_type=TensorProto.UINT8, axis=1)
    want = np.clip(np.rint(x / scale[:, None]) + zero[:, None], 0, 255).astype(np.uint8)
    check(q, [x], want, atol=0)
    dq = single_node("DequantizeLinear", 1, consts={"s": scale, "z": zero}, rank=3,
                     in_type=TensorProto.UINT8, axis=1)
    dequantized = (want.astype(np.float64) - zero[:, None]) * scale[:, None]
    check(dq, [want], dequantized.astype(np.float32))


def test_cast_to_float16_and_int8():
    x = np.array([[0.3, -1.7, 2.5], [100.2, -5.0, 65519.0]], np.float32)
    to16 = single_node("Cast", 1, to=TensorProto.FLOAT16, out_type=TensorProto.FLOAT16)
    check(to16, [x], x.astype(np.float16), rtol=1e-3)
    to8 = single_node("Cast", 1, to=TensorProto.INT8, out_type=TensorProto.INT8)
    small = x[:, :2].copy()
    check(to8, [small], np.trunc(small).astype(np.int8))


@pytest.mark.parametrize("op_type,attrs", [
    ("Cast", {"to": 999}),
    ("Cast", {"to": TensorProto.STRING}),
    ("Gelu", {"approximate": "cubic"}),
    ("Softmax", {"axis": 5}),
])
def test_bad_attributes_raise_lowering_error(op_type, attrs):
    model = single_node(op_type, 1, opset=21, **attrs)
    with pytest.raises(LoweringError):
        lower(model)(np.zeros((2, 3), np.float32))


def test_reduce_axes_must_be_static():
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"])
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", F, [2, 3]),
         helper.make_tensor_value_info("axes", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", F, ["y0", "y1"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(LoweringError, match="trace time"):
        jax.jit(lower(model))(np.zeros((2, 3), np.float32), np.array([1]))
