"""``lower(model, ops=...)`` overrides ops for that lowered function only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from bbjax.errors import LoweringError
from bbjax.onnx import lower
from bbjax.onnx.ops.registry import OP_TABLE


def _vi(name: str, shape=(2, 2)) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def matmul_model(via_function: bool = False) -> onnx.ModelProto:
    """``y = a @ b``, directly or inside a local function."""
    functions = []
    if via_function:
        node = helper.make_node("Product", ["a", "b"], ["y"], domain="local")
        functions = [helper.make_function("local", "Product", ["p", "q"], ["r"],
                                          [helper.make_node("MatMul", ["p", "q"], ["r"])],
                                          [helper.make_opsetid("", 17)])]
    else:
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
    graph = helper.make_graph([node], "mm", [_vi("a"), _vi("b")], [_vi("y")])
    return helper.make_model(graph, functions=functions, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])


class CountingMatMul:
    """A MatMul plus ``shift``, counting the calls it served."""

    def __init__(self, shift: float):
        self.shift, self.calls = shift, 0

    def __call__(self, ctx, a, b):
        self.calls += 1
        return jnp.matmul(a, b) + self.shift


def _inputs(seed: int):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(2, 2)).astype(np.float32) for _ in range(2)]


@pytest.mark.parametrize("via_function", [False, True])
@pytest.mark.parametrize("domain", ["", "ai.onnx"])
def test_an_override_serves_its_lowered_function_only(via_function, domain):
    a, b = _inputs(0)
    want = a.astype(np.float64) @ b.astype(np.float64)
    impl = CountingMatMul(3.0)
    entry = OP_TABLE["", "MatMul"]
    fast = lower(matmul_model(via_function), ops={(domain, "MatMul"): impl})
    plain = lower(matmul_model(via_function))
    np.testing.assert_allclose(jax.jit(fast)(a, b)[0], want + 3.0, rtol=1e-5)
    assert impl.calls == 1
    np.testing.assert_allclose(jax.jit(plain)(a, b)[0], want, rtol=1e-5)
    assert impl.calls == 1 and OP_TABLE["", "MatMul"] is entry


def test_two_lowerings_of_one_model_keep_their_own_ops():
    a, b = _inputs(1)
    model = matmul_model()
    one, two = CountingMatMul(1.0), CountingMatMul(2.0)
    first, second = lower(model, ops={("", "MatMul"): one}), lower(model, ops={("", "MatMul"): two})
    np.testing.assert_allclose(second(a, b)[0] - first(a, b)[0], np.ones((2, 2)), rtol=1e-5)
    assert (one.calls, two.calls) == (1, 1)


def test_an_override_in_another_domain_adds_an_op():
    node = helper.make_node("Twice", ["a"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "twice", [_vi("a")], [_vi("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    with pytest.raises(LoweringError, match="unsupported op"):
        lower(model)
    a, _ = _inputs(2)
    twice = lower(model, ops={("com.example", "Twice"): lambda ctx, x: 2.0 * x})
    np.testing.assert_array_equal(twice(a)[0], 2.0 * a)


@pytest.mark.parametrize("ops, message", [
    ({"MatMul": lambda ctx, a, b: a}, "not a \\(domain, op_type\\) pair"),
    ({("", ""): lambda ctx, a, b: a}, "not a \\(domain, op_type\\) pair"),
    ({("", "Matmul"): lambda ctx, a, b: a}, "no such ai.onnx op"),
    ({("", "MatMul"): "fast"}, "not callable"),
    ({("", "MatMul"): lambda ctx, a, b: a, ("ai.onnx", "MatMul"): lambda ctx, a, b: b},
     "given twice"),
    ([("", "MatMul")], "ops must map"),
])
def test_bad_overrides_are_refused_when_lowering(ops, message):
    with pytest.raises(LoweringError, match=message):
        lower(matmul_model(), ops=ops)
