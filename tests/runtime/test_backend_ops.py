"""A Backend among the bindings lowers every partition with its op overrides, in
``simulate`` and in ``install`` alike."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bbjax
from bbjax.components import Component, Role, backend
from bbjax.components.backend import op_overrides
from bbjax.dsl import Graph, Module
from bbjax.errors import ComponentError
from bbjax.onnx.ops.registry import OP_TABLE
from bbjax.runtime.node import AppOutput, NodeConfig, Outbound
from bbjax.compiler.step import PartitionStep

VECTOR = np.array([1.0, -2.0, 3.5], np.float32)
POPULATION = {"self": 1, "node": 3}


class Square(Module):
    """``self`` sends its vector; each node outputs its squared norm (an ONNX Gemm)."""

    name = "square"

    def body(self, g: Graph) -> None:
        heard = g.send("v", g.slot("state").value(), to=g.peers("node"))
        g.output("norm2", (heard[None, :] @ heard[:, None])[0, 0])


def source() -> Component:
    return Component(Role.PROTOCOL, lambda key: {"v": jnp.asarray(VECTOR)},
                     {"value": lambda s: (s, s["v"])}, "source")


class Shifted:
    """The lowering's own Gemm plus ``shift``; ``calls`` counts the traces it served."""

    def __init__(self, shift: float):
        self.shift, self.calls = shift, 0

    def __call__(self, ctx, *inputs):
        self.calls += 1
        return OP_TABLE["", "Gemm"].impl(ctx, *inputs) + self.shift


def _norm2() -> float:
    return float(np.dot(VECTOR.astype(np.float64), VECTOR.astype(np.float64)))


@pytest.fixture(scope="module")
def plain() -> bbjax.Compiled:
    return bbjax.Compiler().bind("state", source()).compile(Square())


def test_a_backend_bound_at_compile_serves_simulate(plain):
    shifted = Shifted(1.0)
    compiled = (bbjax.Compiler().bind("state", source())
                .bind("kernels", backend({("", "Gemm"): shifted})).compile(Square()))
    key = jax.random.PRNGKey(0)
    np.testing.assert_allclose(bbjax.simulate(compiled, POPULATION, 1, key)["norm2"],
                               [_norm2() + 1.0], rtol=1e-6)
    assert shifted.calls >= 1
    calls = shifted.calls
    np.testing.assert_allclose(bbjax.simulate(plain, POPULATION, 1, key)["norm2"],
                               [_norm2()], rtol=1e-6)
    assert shifted.calls == calls


def test_a_backend_given_to_install_serves_the_node(plain):
    shifted = Shifted(2.0)
    bindings = {"state": source(), "kernels": backend({("ai.onnx", "Gemm"): shifted})}
    sender = bbjax.install(0, plain, ["square"], config=NodeConfig(peers={"node": [1]}))
    results = {}
    for name, given in (("plain", None), ("backend", bindings)):
        node = bbjax.install(1, plain, ["square_node"], given)
        sender.start()
        for event in sender.poll():
            assert isinstance(event, Outbound)
            node.deliver(event.data)
        [out] = [e for e in node.poll() if isinstance(e, AppOutput)]
        results[name] = float(out.value)
    assert results == pytest.approx({"plain": _norm2(), "backend": _norm2() + 2.0}, rel=1e-6)
    assert shifted.calls >= 1


def test_the_step_of_a_partition_without_the_op_is_untouched(plain):
    shifted = Shifted(5.0)
    step = PartitionStep(plain, "square", {"state": source(),
                                           "kernels": backend({("", "Gemm"): shifted})})
    _, _, outbox = step(step.init(jax.random.PRNGKey(0)),
                        {"peers.node": np.arange(3, dtype=np.int32)}, {})
    np.testing.assert_array_equal(outbox["v"][0][0], VECTOR)
    assert shifted.calls == 0


def test_two_backends_overriding_one_op_are_refused(plain):
    one = backend({("", "Gemm"): Shifted(1.0)}, name="one")
    two = backend({("ai.onnx", "Gemm"): Shifted(2.0)}, name="two")
    assert list(op_overrides({"a": one, "state": source()})) == [("", "Gemm")]
    with pytest.raises(ComponentError, match="slots 'a' and 'b'"):
        op_overrides({"a": one, "b": two})
    with pytest.raises(ComponentError, match="ai.onnx::Gemm"):
        bbjax.install(1, plain, ["square_node"], {"state": source(), "a": one, "b": two})
