"""Export and lowering failures raise bbjax errors naming what is at fault."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from onnx import TensorProto, helper

import bbjax
from bbjax.errors import ExportError, LoweringError


def test_unsupported_primitive_names_primitive_and_source():
    def windowed_min(x):
        return jax.lax.reduce_window(x, jnp.inf, jax.lax.min, (2,), (1,), "VALID")

    with pytest.raises(ExportError) as info:
        bbjax.onnx.export(windowed_min, np.zeros(5, np.float32))
    assert info.value.primitive == "reduce_window_min"
    assert "test_errors.py" in info.value.source


def test_typed_key_through_unsupported_primitive():
    with pytest.raises(ExportError) as info:
        bbjax.onnx.export(lambda k: jax.random.gamma(k, 2.0, (3,)), jax.random.key(0))
    assert info.value.primitive.startswith("random_gamma")


def test_failing_trace_is_an_export_error():
    with pytest.raises(ExportError, match="tracing"):
        bbjax.onnx.export(lambda x: x @ x, np.zeros((2, 3), np.float32))


def _model(nodes, inputs, outputs, initializers=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, elem=TensorProto.FLOAT, shape=(2,)):
    return helper.make_tensor_value_info(name, elem, list(shape))


def test_unknown_op_names_node_and_op():
    model = _model([helper.make_node("NoSuchOp", ["x"], ["y"], name="mystery", domain="my.dom")],
                   [_vi("x")], [_vi("y")])
    model.opset_import.append(helper.make_opsetid("my.dom", 1))
    with pytest.raises(LoweringError) as info:
        bbjax.onnx.lower(model)
    assert info.value.node == "mystery"
    assert info.value.op == "my.dom::NoSuchOp"


def test_dangling_input_is_named():
    model = _model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add")],
                   [_vi("x")], [_vi("y")])
    model.graph.value_info.append(_vi("ghost"))
    with pytest.raises(LoweringError, match="ghost"):
        bbjax.onnx.lower(model)


def test_wrong_input_dtype_at_call():
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x")], [_vi("y")])
    fn = bbjax.onnx.lower(model)
    with pytest.raises(LoweringError, match="'x' expects dtype float32"):
        fn(np.zeros(2, np.int32))
    with pytest.raises(LoweringError, match="dim 0 expects 2"):
        fn(np.zeros(3, np.float32))


def test_bad_attribute_is_named():
    node = helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=5)
    fn = bbjax.onnx.lower(_model([node], [_vi("x")], [_vi("y")]))
    with pytest.raises(LoweringError) as info:
        fn(np.zeros(2, np.float32))
    assert info.value.node == "sm"


def test_not_a_model():
    with pytest.raises(LoweringError, match="ModelProto"):
        bbjax.onnx.lower(b"not a model")


def test_checker_failure_is_a_lowering_error():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")])
    model.ir_version = 0
    with pytest.raises(LoweringError, match="onnx.checker"):
        bbjax.onnx.lower(model)
