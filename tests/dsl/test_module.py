"""Module bodies trace into ONNX with slot calls and sends as ai.bytesandbrains nodes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import optax
import pytest
from flax import nnx

from bbjax.components import array_data_source, fixed_view_selector, flax_model
from bbjax.dsl import Module
from bbjax.errors import ModuleError, UnboundSlotError
from bbjax.models import cross_entropy as ce  # tests/runtime/conftest.py imports ce too
from bbjax.onnx import domains


class Net(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.dense(x)


@pytest.fixture(scope="module")
def model():
    return flax_model(Net(nnx.Rngs(0)), optax.sgd(0.1), ce)


@pytest.fixture(scope="module")
def bindings(model):
    return {"model": model, "data": data_source()}


def data_source():
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    return array_data_source(x, (x.sum(1) > 0).astype(np.int32), batch_size=8)


class LocalStep(Module):
    name = "local_step"

    def body(self, g):
        x = g.input("x", jax.ShapeDtypeStruct((8, 4), jnp.float32))
        y = g.input("y", jax.ShapeDtypeStruct((8,), jnp.int32))
        loss = g.slot("model").train(x, y)
        g.output("loss", loss * 2.0)


class Round(Module):
    """Server sends its parameters; clients load them, train a step, send them back."""

    name = "round"

    def body(self, g):
        params = g.slot("model").params()
        on_clients = g.send("global", params, to=g.peers("client"))
        g.slot("model").load_parameters(on_clients)
        x, y = g.slot("data").next_batch(after=on_clients)
        g.call(LocalStep(), x=x, y=y)
        trained = g.slot("model").params()
        back = g.send("update", trained, to=g.peers("server"))
        g.output("update", back)


def _nodes(model_proto, domain_prefix="ai.bytesandbrains"):
    return [n for n in model_proto.graph.node if n.domain.startswith(domain_prefix)]


def _meta(node):
    return {p.key.rsplit(".", 1)[-1]: p.value for p in node.metadata_props}


def test_slot_calls_and_sends_become_bbjax_nodes(bindings):
    proto = Round().build(bindings)
    onnx.checker.check_model(proto)
    ops = [(n.domain, n.op_type) for n in _nodes(proto)]
    role = domains.role_domain("model")
    assert ops == [(role, "params"), (domains.WIRE, "Send"), (role, "load_parameters"),
                   (domains.role_domain("data_source"), "next_batch"), (role, "train"),
                   (role, "params"), (domains.WIRE, "Send")]
    sends = [_meta(n) for n in _nodes(proto) if n.op_type == "Send"]
    assert [(m["port"], m["dest_class"]) for m in sends] == [("global", "client"),
                                                            ("update", "server")]
    assert all(_meta(n)["slot"] == "model" for n in _nodes(proto, role))


def test_graph_inputs_outputs_and_peer_classes(bindings):
    proto = Round().build(bindings)
    inputs = [i.name for i in proto.graph.input]
    assert inputs == ["state.model", "peers.client", "state.data", "peers.server"]
    assert {o.name for o in proto.graph.output} >= {"next_state.model"}
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["ai.bytesandbrains.peer_class.peers.client"] == "client"
    assert meta["ai.bytesandbrains.peer_class.peers.server"] == "server"
    dim = proto.graph.input[1].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "n_client"


def test_state_tokens_order_the_calls_on_one_slot(bindings):
    proto = Round().build(bindings)
    role_nodes = _nodes(proto, domains.role_domain("model"))
    for earlier, later in zip(role_nodes, role_nodes[1:]):
        assert earlier.output[-1] in later.input  # the token links consecutive calls


def test_plain_jnp_between_slot_calls_is_exported(model):
    proto = LocalStep().build({"model": model})
    assert any(n.op_type == "Mul" for n in proto.graph.node)
    assert [o.name for o in proto.graph.output] == ["loss", "next_state.model"]


def test_unbound_slot_is_named():
    with pytest.raises(UnboundSlotError, match="'model'"):
        LocalStep().build({})


def test_send_needs_a_peer_set(model):
    class Bad(Module):
        def body(self, g):
            g.send("p", g.slot("model").params(), to=jnp.zeros(3, jnp.int32))

    with pytest.raises(ModuleError, match="peer set"):
        Bad().build({"model": model})


def test_peer_selector_needs_a_class():
    class Pick(Module):
        def body(self, g):
            g.output("peers", g.slot("selector").sample().ids)

    selector = fixed_view_selector(jnp.arange(5, dtype=jnp.int32), n=2)
    with pytest.raises(ModuleError, match="peer_class"):
        Pick().build({"selector": selector})


def test_duplicate_input_and_reserved_names(model):
    class Twice(Module):
        def body(self, g):
            g.input("x", jnp.zeros(2))
            g.input("x", jnp.zeros(2))

    class Reserved(Module):
        def body(self, g):
            g.output("state.model", g.input("x", jnp.zeros(2)))

    with pytest.raises(ModuleError, match="'x'"):
        Twice().build({})
    with pytest.raises(ModuleError, match="reserved"):
        Reserved().build({})


def test_empty_module_is_rejected():
    class Empty(Module):
        def body(self, g):
            g.input("x", jnp.zeros(2))

    with pytest.raises(ModuleError, match="no outputs"):
        Empty().build({})
