"""Pass ``inline_slots``: exportable slots' methods become partition nodes over real state
inputs and outputs; the partition is one ONNX program (onnx.checker, onnxruntime, one jitted
JAX function); a slot that cannot export stays opaque with its reason in the artifact; the
passport covers the result; ``Compiler(inline=...)`` turns it off or picks slots."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import optax
import pytest
from flax import nnx

import bbjax
from bbjax.compiler import annotations as ann
from bbjax.compiler.inline import INLINE, inlined_states, slot_status
from bbjax.compiler.passport import verify_passport
from bbjax.components import array_data_source, flax_model, padded_data_source
from bbjax.errors import CompileError, PassportError
from bbjax.modules import FedAvgRound
from bbjax.onnx import lower
from bbjax.models import LogisticRegression, cross_entropy
from tests.cycling_source import cycling_source

MODEL = flax_model(LogisticRegression(6, 3, rngs=nnx.Rngs(0)), optax.sgd(0.5), cross_entropy)
RNG = np.random.default_rng(0)
X = RNG.normal(size=(24, 6)).astype(np.float32)
Y = RNG.integers(0, 3, size=24).astype(np.int32)


class LocalSteps(bbjax.Module):
    """Two training steps on the node's own data; no messages: one partition."""

    name = "local"

    def body(self, g):
        losses = []
        for _ in range(2):
            x, y = g.slot("data").next_batch()
            losses.append(g.slot("model").train(x, y))
        g.output("loss", jnp.stack(losses))


@pytest.fixture(scope="module")
def local():
    source = cycling_source(X, Y, 8)
    compiled = bbjax.Compiler().bind("model", MODEL).bind("data", source).compile(LocalSteps())
    return compiled, source


@pytest.fixture(scope="module")
def fedavg():
    source = array_data_source(X, Y, batch_size=8)
    return bbjax.Compiler().bind("model", MODEL).bind("data", source).compile(FedAvgRound(2))


def _reference(source, states):
    """Two train steps through the components' own JAX methods."""
    model, data = states["model"], states["data"]
    losses = []
    for _ in range(2):
        data, (x, y) = source.call("next_batch", data)
        model, loss = MODEL.call("train", model, x, y)
        losses.append(loss)
    return {"model": model, "data": data}, np.stack(losses)


def _feed(function, layouts, states):
    return {n: np.asarray(v) for slot, layout in layouts.items()
            for n, v in zip(layout.inputs, layout.leaves(states[slot]))}


def test_a_partition_with_inlined_slots_is_one_onnx_program(local):
    compiled, source = local
    (function,) = compiled.model.functions
    assert slot_status(function) == {"data": "inlined", "model": "inlined"}
    assert not any(ann.is_slot_call(n) for n in function.node)
    assert all(n.domain == "" for n in function.node)
    model = compiled.partition_model(function.name)
    onnx.checker.check_model(model, full_check=True)
    components = {"model": MODEL, "data": source}
    layouts = inlined_states(function, components)
    states = {"model": MODEL.init(jax.random.key(1)), "data": source.init(jax.random.key(2))}
    feed = _feed(function, layouts, states)
    assert list(feed) == list(function.input)
    want_states, want_loss = _reference(source, states)

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, feed)))
    np.testing.assert_allclose(got["loss"], want_loss, rtol=1e-5)
    for slot, layout in layouts.items():
        new = layout.state([got[n] for n in layout.outputs])
        for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(want_states[slot])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)

    program = jax.jit(lower(model)).lower(*feed.values())  # one XLA program, no host calls
    assert "callback" not in program.as_text()
    out = dict(zip(function.output, program.compile()(*feed.values())))
    np.testing.assert_allclose(out["loss"], want_loss, rtol=1e-5)


def test_state_leaves_are_typed_partition_inputs_and_outputs(local):
    compiled, _ = local
    (function,) = compiled.model.functions
    types = {v.name: v.type.tensor_type for v in function.value_info}
    kernel = types["state.model.params.out.kernel"]
    assert kernel.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in kernel.shape.dim] == [6, 3]
    assert [d.dim_value for d in types["state.data.x"].shape.dim] == [24, 6]
    assert "next_state.model.params.out.kernel" in function.output
    assert "state.model" not in function.input and "next_state.model" not in function.output


def test_a_prng_key_in_the_state_travels_as_raw_key_data():
    source = padded_data_source(X, Y, 20, batch_size=8)
    compiled = bbjax.Compiler().bind("model", MODEL).bind("data", source).compile(LocalSteps())
    (function,) = compiled.model.functions
    assert slot_status(function)["data"] == "inlined"
    key = {v.name: v.type.tensor_type for v in function.value_info}["state.data.key"]
    assert key.elem_type == onnx.TensorProto.UINT32
    assert [d.dim_value for d in key.shape.dim] == [2]
    layout = inlined_states(function, {"model": MODEL, "data": source})["data"]
    state = source.init(jax.random.key(3))
    back = layout.state(layout.leaves(state))
    assert jax.random.key_data(back.key).tolist() == jax.random.key_data(state.key).tolist()


def test_a_slot_that_does_not_export_stays_opaque_with_its_reason(fedavg):
    for function in fedavg.model.functions:
        status = slot_status(function)
        assert status["model"] == "inlined"
        if "data" in status:
            assert status["data"].startswith("opaque: array_data_source.next_batch does not "
                                             "export")
            calls = {n.op_type for n in function.node if ann.is_slot_call(n)}
            assert calls == {"next_batch", "num_examples"}
    props = verify_passport(fedavg.model)
    client = fedavg.find("fedavg_client")
    assert props[f"ai.bytesandbrains.binding.{client.name}.model"] == "model|flax_model"
    assert props[f"ai.bytesandbrains.binding.{client.name}.data"] == \
        "data_source|array_data_source"


def test_the_passport_covers_the_inlined_partition(fedavg):
    tampered = onnx.ModelProto()
    tampered.CopyFrom(fedavg.model)
    client = next(f for f in tampered.functions if f.name.startswith("fedavg_client"))
    for prop in client.metadata_props:
        if prop.key == INLINE + "data":
            prop.value = "inlined"
    with pytest.raises(PassportError, match="content hash"):
        verify_passport(tampered)
    tampered.CopyFrom(fedavg.model)
    client = next(f for f in tampered.functions if f.name.startswith("fedavg_client"))
    node = next(n for n in client.node if n.op_type == "Gemm" or n.op_type == "MatMul")
    node.op_type = "Add" if node.op_type == "MatMul" else "MatMul"
    with pytest.raises(PassportError, match="content hash"):
        verify_passport(tampered)


def test_inline_false_keeps_every_slot_call_and_records_nothing():
    source = array_data_source(X, Y, batch_size=8)
    compiled = (bbjax.Compiler(inline=False).bind("model", MODEL).bind("data", source)
                .compile(FedAvgRound(2)))
    for function in compiled.model.functions:
        assert slot_status(function) == {}
        assert any(ann.is_slot_call(n) for n in function.node)
        assert all(i == f"state.{i.split('.')[1]}" for i in function.input
                   if i.startswith("state."))
    assert "inline_slots" not in [p.name for p in bbjax.Compiler(inline=False).passes]
    verify_passport(compiled.model)


def test_inline_names_the_slots_to_inline(local):
    _, source = local
    compiled = (bbjax.Compiler(inline=["model"]).bind("model", MODEL).bind("data", source)
                .compile(LocalSteps()))
    (function,) = compiled.model.functions
    assert slot_status(function) == {
        "data": "opaque: not selected by Compiler(inline=...)", "model": "inlined"}
    assert "state.data" in function.input and "state.model.params.out.bias" in function.input


@pytest.mark.parametrize("bad", ["model", 3, [""], [1]])
def test_a_bad_inline_option_is_a_compile_error(bad):
    with pytest.raises(CompileError, match="inline must be"):
        bbjax.Compiler(inline=bad)


def test_a_component_of_another_state_shape_is_refused_for_an_inlined_slot(local):
    compiled, _ = local
    (function,) = compiled.model.functions
    bigger = cycling_source(np.zeros((32, 6), np.float32), np.zeros(32, np.int32), 8)
    with pytest.raises(CompileError, match="state.data.x"):
        inlined_states(function, {"model": MODEL, "data": bigger})
