"""The compiler's passes, partitions and passport."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest

from bbjax.compiler import Compiler, Pass, load, verify_passport

from bbjax.errors import CompileError, CrossClassDataflowError, NotCompiledError, PassportError, UnboundSlotError
from bbjax.compiler import annotations as ann
from bbjax.compiler.passport import COMPILED, COMPILER, FORMAT
from bbjax.components import weighted_mean
from bbjax.dsl import Module
from bbjax.compiler.step import PartitionStep
from bbjax.onnx import domains
from tests.dsl.test_module import Round, data_source, model  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def compiled(model):  # noqa: F811
    return Compiler().bind("model", model).bind("data", data_source()).compile(Round())


def test_one_partition_per_peer_class(compiled):
    names = compiled.partitions
    assert {n.split("#")[0] for n in names} == {"round", "round_client", "round_server"}
    assert all(re.fullmatch(r"[a-z_]+#[0-9a-f]{16}", n) for n in names)


def test_every_partition_passes_the_checker(compiled):
    onnx.checker.check_model(compiled.model)
    for target in compiled.partitions:
        onnx.checker.check_model(compiled.partition_model(target))


def test_sends_and_receives_are_split_across_partitions(compiled):
    client = compiled.find("round_client")
    kinds = [(n.op_type, ann.get(n, ann.PORT)) for n in client.node if n.domain == domains.WIRE]
    assert kinds == [("Recv", "global"), ("Send", "update")]
    gates = [n.op_type for n in client.node if n.domain == "ai.bytesandbrains.gate"]
    assert gates == ["DedupGateRx", "PeerHealthGateRx", "BackoffGateRx", "PeerHealthGateTx",
                     "BackoffGateTx", "DeadlineCheck"]
    send = next(n for n in client.node if n.op_type == "Send")
    assert ann.get(send, "ai.bytesandbrains.deadline_ns") == "100000000"
    assert ann.get(send, "ai.bytesandbrains.batch_group") == "client->server"
    recv = next(n for n in client.node if n.op_type == "Recv")
    assert ann.get(recv, ann.SOURCE_CLASS) == "self"
    server = compiled.find("round_server")
    assert [n.op_type for n in server.node if n.domain == domains.WIRE] == ["Recv"]


def test_slot_state_chain_is_cut_per_class(model):  # noqa: F811
    compiled = (Compiler(inline=False).bind("model", model).bind("data", data_source())
                .compile(Round()))  # opaque slot calls: the token chain stays visible
    client = compiled.find("round_client")
    assert "state.model" in client.input and "next_state.model" in client.output
    calls = [n for n in client.node if ann.is_slot_call(n) and ann.get(n, ann.SLOT) == "model"]
    assert calls[0].input[-1] == "state.model"


def test_targets_found_by_prefix_and_unknown_listed(compiled):
    assert compiled.find("round_client").name.startswith("round_client#")
    with pytest.raises(CompileError, match="available"):
        compiled.find("round_nobody")


def test_cross_class_dataflow_names_op_and_classes(model):  # noqa: F811
    class Mixed(Module):
        name = "mixed"

        def body(self, g):
            params = g.slot("model").params()
            there = g.send("p", params, to=g.peers("client"))
            g.output("bad", there["dense"]["kernel"] + params["dense"]["kernel"])

    with pytest.raises(CrossClassDataflowError, match="'client' and 'self'"):
        Compiler().bind("model", model).compile(Mixed())


def test_unbound_slot_is_named(model):  # noqa: F811
    built = Round().build({"model": model, "data": data_source()})
    with pytest.raises(UnboundSlotError, match="'data'"):
        Compiler().bind("model", model).compile(built)


def test_slot_bound_to_wrong_role(model):  # noqa: F811
    built = Round().build({"model": model, "data": data_source()})
    aggregator = weighted_mean(4, {"w": jnp.zeros(2)})
    with pytest.raises(CompileError, match="'data' is called as a data_source"):
        Compiler().bind("model", model).bind("data", aggregator).compile(built)


def test_duplicate_ports_are_rejected(model):  # noqa: F811
    class TwoPorts(Module):
        name = "two"

        def body(self, g):
            params = g.slot("model").params()
            g.output("a", g.send("p", params, to=g.peers("c1")))
            g.output("b", g.send("p", params, to=g.peers("c2")))

    with pytest.raises(CompileError, match="port 'p'"):
        Compiler().bind("model", model).compile(TwoPorts())


def test_passes_are_named_editable_and_ordered(model):  # noqa: F811
    compiler = Compiler().bind("model", model).bind("data", data_source())
    assert [p.name for p in compiler.passes] == [
        "validate", "expand_attribute_defaults", "infer_peer_classes", "synthesize_receives",
        "check_wire_types", "resolve_slots", "analyze_wire_edges", "insert_receive_gates",
        "insert_send_gates", "insert_deadlines", "validate_runtime_complete",
        "partition_by_peer_class", "inline_slots", "stamp_passport"]
    seen = []
    compiler.insert(Pass("spy", lambda m, ctx: seen.append(len(m.graph.node)) or m),
                    after="validate")
    compiler.compile(Round())
    assert seen and seen[0] > 0
    compiler.remove("spy")
    with pytest.raises(CompileError):
        compiler.remove("spy")


def test_passport_verifies_and_save_load_round_trips(compiled, tmp_path):
    props = verify_passport(compiled.model)
    assert props[COMPILED] == FORMAT
    assert any(k.startswith("ai.bytesandbrains.binding.round_client") for k in props)
    path = tmp_path / "round.onnx"
    compiled.save(path)
    assert load(path).partitions == compiled.partitions


def test_tampered_partition_is_caught(compiled):
    model = ann.copy_model(compiled.model)
    node = next(n for n in model.functions[0].node if n.op_type == "Identity" or n.input)
    node.name = node.name + "x"
    with pytest.raises(PassportError, match="altered"):
        verify_passport(model)


def test_missing_passport_and_wrong_version(compiled):
    model = ann.copy_model(compiled.model)
    kept = [p for p in model.metadata_props if p.key != COMPILED]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    with pytest.raises(NotCompiledError):
        verify_passport(model)
    model = ann.copy_model(compiled.model)
    for p in model.metadata_props:
        if p.key == COMPILER:
            p.value = "0.0.0"
    with pytest.raises(PassportError, match="recompile"):
        verify_passport(model)


def test_removing_a_gate_pass_is_caught(model):  # noqa: F811
    compiler = Compiler().bind("model", model).bind("data", data_source())
    compiler.remove("insert_send_gates")
    with pytest.raises(CompileError, match="PeerHealthGateTx"):
        compiler.compile(Round())


def test_mismatched_wire_types_need_a_codec(model):  # noqa: F811
    from bbjax.compiler import CompileContext
    from bbjax.compiler.peer_classes import infer_peer_classes
    from bbjax.compiler.receives import synthesize_receives
    from bbjax.compiler.wire import check_wire_types
    built = Round().build({"model": model, "data": data_source()})
    context = CompileContext("round", {})
    staged = synthesize_receives(infer_peer_classes(built, context), context)
    recv = next(n for n in staged.graph.node if ann.is_recv(n))
    info = next(v for v in staged.graph.value_info if v.name == recv.output[0])
    info.type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    with pytest.raises(CompileError, match="Codec"):
        check_wire_types(staged, context)


def test_attribute_defaults_are_written(model):  # noqa: F811
    from bbjax.compiler.validate import expand_attribute_defaults
    node = onnx.helper.make_node("LeakyRelu", ["x"], ["y"])
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info(
        "x", onnx.TensorProto.FLOAT, [2])], [onnx.helper.make_tensor_value_info(
            "y", onnx.TensorProto.FLOAT, [2])])
    expanded = expand_attribute_defaults(onnx.helper.make_model(graph), None)
    alpha = next(a for a in expanded.graph.node[0].attribute if a.name == "alpha")
    assert alpha.f == pytest.approx(0.01)


def test_validate_rejects_a_model_without_ops():
    from bbjax.compiler import CompileContext
    from bbjax.compiler.validate import validate
    empty = onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], []))
    with pytest.raises(CompileError, match="no ops"):
        validate(empty, CompileContext("empty", {}))


def _staged(model, *passes):  # noqa: F811
    from bbjax.compiler import CompileContext
    built = Round().build({"model": model, "data": data_source()})
    context = CompileContext("round", {"model": model, "data": data_source()})
    for pass_ in passes:
        built = pass_(built, context)
    return built, context


def test_infer_peer_classes_stamps_every_node(model):  # noqa: F811
    from bbjax.compiler.peer_classes import infer_peer_classes
    staged, _ = _staged(model, infer_peer_classes)
    homes = {(n.domain.rsplit(".", 1)[-1], n.op_type): ann.get(n, ann.HOME)
             for n in staged.graph.node if n.domain}
    assert homes[("wire", "Send")] in {"self", "client"}
    assert homes[("data_source", "next_batch")] == "client"
    assert homes[("model", "train")] == "client"
    assert all(ann.get(n, ann.HOME) is not None for n in staged.graph.node)


def test_synthesize_receives_pairs_each_send_with_a_recv(model):  # noqa: F811
    from bbjax.compiler.peer_classes import infer_peer_classes
    from bbjax.compiler.receives import synthesize_receives
    staged, _ = _staged(model, infer_peer_classes, synthesize_receives)
    sends = [n for n in staged.graph.node if ann.is_send(n)]
    recvs = [n for n in staged.graph.node if ann.is_recv(n)]
    assert [ann.get(s, ann.PORT) for s in sends] == [ann.get(r, ann.PORT) for r in recvs]
    assert all(list(s.output) == [f"sent.{ann.get(s, ann.PORT)}"] for s in sends)
    assert [ann.get(r, ann.HOME) for r in recvs] == ["client", "server"]


def test_partition_copies_constants_where_needed(model):  # noqa: F811
    class Scaled(Module):
        name = "scaled"

        def body(self, g):
            params = g.slot("model").params()
            there = g.send("p", params["dense"]["bias"], to=g.peers("client"))
            g.output("scaled", there * jnp.arange(3.0))

    compiled = Compiler().bind("model", model).compile(Scaled())
    client = compiled.find("scaled_client")
    assert any(n.op_type == "Constant" for n in client.node)
    onnx.checker.check_model(compiled.partition_model("scaled_client"))


def test_constant_graph_outputs_are_computed_by_the_self_partition():
    class Constants(Module):
        name = "constants"

        def body(self, g):
            x = g.input("x", jax.ShapeDtypeStruct((3,), jnp.float32))
            twos = jnp.ones((2,)) * 2.0
            g.output("one", jnp.int32(1))
            g.output("twos", twos)
            g.output("y", x + twos.sum())

    compiled = Compiler().compile(Constants())
    [name] = compiled.partitions
    _, outputs, _ = PartitionStep(compiled, name, {})({}, {"x": jnp.arange(3.0)}, {})
    assert int(outputs["one"]) == 1
    np.testing.assert_array_equal(outputs["twos"], [2.0, 2.0])
    np.testing.assert_array_equal(outputs["y"], [4.0, 5.0, 6.0])
