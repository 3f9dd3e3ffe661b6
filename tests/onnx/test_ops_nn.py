"""Convolution, pooling, normalization and Gemm ops against numpy float64 on random inputs."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from bbjax.errors import LoweringError
from bbjax.onnx import lower

F = TensorProto.FLOAT


def model(op_type, inputs, outputs, *, consts=None, opset=22, **attrs):
    """One ``op_type`` node; ``inputs`` / ``outputs`` map names to ranks (dims symbolic, so
    vmap can batch them) and ``consts`` become initializers."""
    consts = consts or {}
    node = helper.make_node(op_type, list(inputs) + list(consts), list(outputs), **attrs)

    def info(name, rank, elem=F):
        return helper.make_tensor_value_info(name, elem, [f"{name}{d}" for d in range(rank)])

    graph = helper.make_graph(
        [node], "g", [info(n, r) for n, r in inputs.items()],
        [info(n, r, TensorProto.INT64 if n == "indices" else F) for n, r in outputs.items()],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def check(onnx_model, args, wants, rtol=1e-5, atol=1e-5):
    """Jitted outputs match ``wants``; vmap over two examples matches two single calls."""
    fn = jax.jit(lower(onnx_model))
    got = fn(*args)
    for g, w in zip(got, wants):
        assert g.shape == w.shape
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=rtol, atol=atol)
    others = [a[::-1].copy() for a in args]
    batched = jax.jit(jax.vmap(lower(onnx_model)))(*[np.stack(p) for p in zip(args, others)])
    for b, g, o in zip(batched, got, fn(*others)):
        np.testing.assert_allclose(np.asarray(b[0]), np.asarray(g), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(b[1]), np.asarray(o), rtol=1e-6, atol=1e-6)
    return got


@pytest.fixture
def rng():
    return np.random.default_rng()


def normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# -- numpy float64 references -----------------------------------------------------------------


def windows(in_shape, kernel, strides, dilations, pads, out_shape):
    """For each output cell, the input positions of its window (pads excluded)."""
    n = len(kernel)
    for cell in itertools.product(*map(range, out_shape)):
        taps = []
        for tap in itertools.product(*map(range, kernel)):
            pos = tuple(cell[i] * strides[i] - pads[i] + tap[i] * dilations[i] for i in range(n))
            taps.append((pos, all(0 <= p < s for p, s in zip(pos, in_shape))))
        yield cell, taps


def conv_ref(x, w, b, strides, dilations, pads, group):
    x, w = x.astype(np.float64), w.astype(np.float64)
    n = x.ndim - 2
    kernel = w.shape[2:]
    out = [(x.shape[2 + i] + pads[i] + pads[n + i] - (kernel[i] - 1) * dilations[i] - 1)
           // strides[i] + 1 for i in range(n)]
    cg, mg = x.shape[1] // group, w.shape[0] // group
    y = np.zeros((x.shape[0], w.shape[0], *out))
    for cell, taps in windows(x.shape[2:], kernel, strides, dilations, pads, out):
        for g in range(group):
            acc = 0
            for tap, (pos, inside) in zip(itertools.product(*map(range, kernel)), taps):
                if inside:
                    patch = x[(slice(None), slice(g * cg, (g + 1) * cg)) + pos]
                    acc = acc + patch @ w[(slice(g * mg, (g + 1) * mg), slice(None)) + tap].T
            y[(slice(None), slice(g * mg, (g + 1) * mg)) + cell] = acc
    return y + b.reshape(-1, *[1] * n)


def conv_transpose_ref(x, w, strides, pads, output_padding, group):
    x, w = x.astype(np.float64), w.astype(np.float64)
    (n_, c, h, wd), (_, mg, kh, kw) = x.shape, w.shape
    cg = c // group
    full = np.zeros((n_, mg * group, (h - 1) * strides[0] + kh + output_padding[0],
                     (wd - 1) * strides[1] + kw + output_padding[1]))
    for g, ci, i, j in itertools.product(range(group), range(cg), range(h), range(wd)):
        contrib = x[:, g * cg + ci, i, j][:, None, None, None] * w[g * cg + ci][None]
        full[:, g * mg:(g + 1) * mg, i * strides[0]:i * strides[0] + kh,
             j * strides[1]:j * strides[1] + kw] += contrib
    return full[:, :, pads[0]:full.shape[2] - pads[2], pads[1]:full.shape[3] - pads[3]]


def pool_ref(x, kernel, strides, pads, kind, ceil_mode=False, count_include_pad=False):
    """Max (values and flat indices) or average pooling of ``x`` in float64."""
    x = x.astype(np.float64)
    n = len(kernel)
    in_shape = x.shape[2:]
    out = []
    for i in range(n):
        span = (in_shape[i] + pads[i] + pads[n + i] - kernel[i]) / strides[i]
        o = int(np.ceil(span) if ceil_mode else np.floor(span)) + 1
        if ceil_mode and (o - 1) * strides[i] >= in_shape[i] + pads[i]:
            o -= 1
        out.append(o)
    y = np.zeros(x.shape[:2] + tuple(out))
    idx = np.zeros(x.shape[:2] + tuple(out), np.int64)
    for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for cell, taps in windows(in_shape, kernel, strides, [1] * n, pads, out):
            inside = [pos for pos, ok in taps if ok]
            vals = [x[(b, c) + pos] for pos in inside]
            if kind == "max":
                best = int(np.argmax(vals))
                y[(b, c) + cell] = vals[best]
                idx[(b, c) + cell] = np.ravel_multi_index((b, c) + inside[best], x.shape)
            else:
                padded_in = [pos for pos, _ in taps if all(
                    -pads[i] <= pos[i] < in_shape[i] + pads[n + i] for i in range(n))]
                y[(b, c) + cell] = sum(vals) / (len(padded_in) if count_include_pad else len(vals))
    return y, idx


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("attrs", [
    dict(strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2], group=2),
    dict(auto_pad="SAME_LOWER", strides=[2, 2]),
    dict(auto_pad="VALID", kernel_shape=[3, 3]),
])
def test_conv(rng, attrs):
    group = attrs.get("group", 1)
    x, w, b = normal(rng, 2, 4, 7, 6), normal(rng, 6, 4 // group, 3, 3), normal(rng, 6)
    strides = attrs.get("strides", [1, 1])
    dilations = attrs.get("dilations", [1, 1])
    pads = attrs.get("pads", [0, 0, 0, 0])
    if attrs.get("auto_pad") == "SAME_LOWER":
        totals = [max(0, (-(-s // st) - 1) * st + 3 - s) for s, st in zip(x.shape[2:], strides)]
        pads = [t - t // 2 for t in totals] + [t // 2 for t in totals]
    want = conv_ref(x, w, b, strides, dilations, pads, group)
    check(model("Conv", {"x": 4}, {"y": 4}, consts={"w": w, "b": b}, **attrs), [x], [want])


def test_conv_transpose(rng):
    x, w = normal(rng, 2, 4, 3, 4), normal(rng, 4, 3, 3, 2)
    attrs = dict(strides=[2, 3], pads=[1, 0, 0, 1], output_padding=[1, 2], group=2)
    want = conv_transpose_ref(x, w, attrs["strides"], attrs["pads"], attrs["output_padding"], 2)
    check(model("ConvTranspose", {"x": 4, "w": 4}, {"y": 4}, **attrs), [x, w], [want])


@pytest.mark.parametrize("ceil_mode", [0, 1])
def test_max_pool_with_indices(rng, ceil_mode):
    x = normal(rng, 2, 3, 8, 7)
    attrs = dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=ceil_mode)
    y, idx = pool_ref(x, attrs["kernel_shape"], attrs["strides"], attrs["pads"], "max",
                      ceil_mode=ceil_mode)
    fn = lower(model("MaxPool", {"x": 4}, {"y": 4, "indices": 4}, **attrs))
    got_y, got_idx = jax.jit(fn)(x)
    np.testing.assert_allclose(np.asarray(got_y, np.float64), y)
    np.testing.assert_array_equal(np.asarray(got_idx), idx)
    # without the Indices output the values come from reduce_window
    check(model("MaxPool", {"x": 4}, {"y": 4}, **attrs), [x], [y])


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool(rng, count_include_pad):
    x = normal(rng, 2, 3, 7, 9)
    attrs = dict(kernel_shape=[3, 3], strides=[2, 3], pads=[1, 2, 1, 0], ceil_mode=1,
                 count_include_pad=count_include_pad)
    want, _ = pool_ref(x, [3, 3], [2, 3], attrs["pads"], "avg", True, count_include_pad)
    check(model("AveragePool", {"x": 4}, {"y": 4}, **attrs), [x], [want])


def test_layer_normalization(rng):
    x, scale, bias = normal(rng, 3, 4, 5), normal(rng, 4, 5), normal(rng, 4, 5)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(1, 2), keepdims=True)
    inv_std = 1 / np.sqrt(x64.var(axis=(1, 2), keepdims=True) + 1e-3)
    want = (x64 - mean) * inv_std * scale + bias
    onnx_model = model("LayerNormalization", {"x": 3}, {"y": 3, "mean": 3, "inv_std": 3},
                       consts={"scale": scale, "bias": bias}, axis=1, epsilon=1e-3)
    check(onnx_model, [x], [want, mean, inv_std], rtol=1e-4)


def test_batch_normalization(rng):
    x = normal(rng, 4, 3, 5)
    scale, bias, mean = normal(rng, 3), normal(rng, 3), normal(rng, 3)
    var = rng.uniform(0.5, 2.0, 3).astype(np.float32)
    shape = (-1, 1)
    want = ((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape).astype(np.float64) + 1e-5)
            * scale.reshape(shape) + bias.reshape(shape))
    onnx_model = model("BatchNormalization", {"x": 3}, {"y": 3},
                       consts={"s": scale, "b": bias, "m": mean, "v": var})
    check(onnx_model, [x], [want], rtol=1e-4)


def test_gemm(rng):
    a, b, c = normal(rng, 5, 3), normal(rng, 4, 5), normal(rng, 4)
    want = 0.5 * a.T.astype(np.float64) @ b.T.astype(np.float64) + 2.0 * c
    onnx_model = model("Gemm", {"a": 2, "b": 2, "c": 1}, {"y": 2}, transA=1, transB=1,
                       alpha=0.5, beta=2.0, opset=13)
    check(onnx_model, [a, b, c], [want], rtol=1e-4)


def test_conv_kernel_shape_mismatch_raises(rng):
    onnx_model = model("Conv", {"x": 4}, {"y": 4}, consts={"w": normal(rng, 2, 1, 3, 3)},
                       kernel_shape=[2, 2])
    with pytest.raises(LoweringError, match="kernel_shape"):
        lower(onnx_model)(normal(rng, 1, 1, 5, 5))


def test_random_training_dropout_raises(rng):
    onnx_model = model("Dropout", {"x": 2}, {"y": 2},
                       consts={"ratio": np.float32(0.5), "training": np.bool_(True)})
    with pytest.raises(LoweringError, match="random"):
        lower(onnx_model)(normal(rng, 2, 3))
