"""A lowered partition's slot calls and wire ops use the handlers given to each call."""

from __future__ import annotations

import threading

import jax
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from bbjax.errors import LoweringError
from bbjax.onnx import domains, lower
from bbjax.onnx.treedef import treedef_to_json

META = "ai.bytesandbrains."


def partition() -> onnx.ModelProto:
    """``y = slot s.bump(x)`` then ``send(port "p", y, peers)``: a partition's shape."""
    bump = helper.make_node("bump", ["x", "state.s"], ["y", "next_state.s"],
                            domain=domains.role_domain("protocol"), name="bump")
    send = helper.make_node("Send", ["y", "peers"], ["sent.p"], domain=domains.WIRE,
                            name="send.p")
    for node, props in ((bump, {"slot": "s", "n_triggers": "0",
                                "in_tree": treedef_to_json(jax.tree.structure((0,)))}),
                        (send, {"port": "p", "n_gates": "0"})):
        for key, value in props.items():
            node.metadata_props.add(key=META + key, value=value)
    graph = helper.make_graph(
        [bump, send], "partition",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("state.s", TensorProto.UINT8, []),
         helper.make_tensor_value_info("peers", TensorProto.INT32, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("next_state.s", TensorProto.UINT8, []),
         helper.make_tensor_value_info("sent.p", TensorProto.UINT8, [])])
    return helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid(domains.WIRE, 1),
        helper.make_opsetid(domains.role_domain("protocol"), 1)])


class Recorder:
    """Handlers whose slot adds ``step`` and whose sends are kept; ``during`` runs inside
    every slot call."""

    def __init__(self, step: float, during=lambda: None):
        self.step, self.during = step, during
        self.sent: dict[str, list] = {}

    def call_slot(self, slot, method, args):
        assert (slot, method) == ("s", "bump")
        self.during()
        return [args[0] + self.step]

    def send(self, port, leaves, peers):
        assert port not in self.sent, "one send per call"
        self.sent[port] = list(leaves)

    def receive(self, port):
        raise AssertionError("the partition receives nothing")


def _args(value: float):
    return np.full(3, value, np.float32), np.zeros((), np.uint8), np.zeros(1, np.int32)


@pytest.fixture(scope="module")
def lowered():
    return lower(partition())


def test_a_slot_call_may_run_the_same_lowered_partition_inside_it(lowered):
    inner = Recorder(100.0)
    outer = Recorder(1.0, during=lambda: lowered(*_args(5.0), handlers=inner))
    y, _, _ = lowered(*_args(2.0), handlers=outer)
    np.testing.assert_array_equal(y, [3.0] * 3)
    # the outer send, after the nested call returned, still reaches the outer handlers
    np.testing.assert_array_equal(outer.sent["p"][0], [3.0] * 3)
    np.testing.assert_array_equal(inner.sent["p"][0], [105.0] * 3)


def test_two_threads_tracing_one_lowered_partition_keep_their_handlers(lowered):
    both_inside = threading.Barrier(2, timeout=60)
    handlers = [Recorder(float(i + 1), during=both_inside.wait) for i in range(2)]
    results: dict[int, object] = {}

    def run(i: int) -> None:
        step = jax.jit(lambda *a: lowered(*a, handlers=handlers[i])[0])
        results[i] = step(*_args(10.0 * i))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, h in enumerate(handlers):
        np.testing.assert_array_equal(results[i], np.full(3, 10.0 * i + i + 1))
        assert list(h.sent) == ["p"]  # traced: each thread's send went to its own handlers


def test_a_partition_called_without_handlers_names_them(lowered):
    with pytest.raises(LoweringError, match="handlers="):
        lowered(*_args(0.0))
