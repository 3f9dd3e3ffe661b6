"""``Program``: a compiled artifact read once; the components it was compiled with."""

from __future__ import annotations

import jax
import numpy as np
import onnx
import pytest

import bbjax
from bbjax.compiler import annotations as ann
from bbjax.compiler.passport import HASH, content_hash
from bbjax.compiler.program import Program, Receive, Send, TensorType
from bbjax.components import backend
from bbjax.dsl import Graph, Module
from bbjax.errors import InstallError, ProgramError, SimulationError, StepError
from bbjax.modules import FedAvgRound
from bbjax.runtime.node import NodeConfig
from bbjax.compiler.step import PartitionStep
from tests.compiler.test_passport_bindings import POPULATION, Relay, holder
from tests.dsl.test_module import Round, data_source, model  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def round_(model):  # noqa: F811
    return bbjax.Compiler().bind("model", model).bind("data", data_source()).compile(Round())


def _param_types(model) -> tuple[TensorType, ...]:  # noqa: F811
    """What the server's parameters are, from the component itself."""
    leaves = jax.tree.leaves(model.abstract_call("params", model.abstract_state)[1])
    return tuple(TensorType(np.dtype(leaf.dtype), tuple(leaf.shape)) for leaf in leaves)


def test_partitions_ports_and_bindings_are_read_once(round_, model):  # noqa: F811
    program = Program.of(round_)
    assert Program.of(round_) is program
    assert program.peer_classes == ("client", "self", "server")
    client = program.partition("round_client")
    assert client is program.partition(client.name)
    assert (client.peer_class, client.phase, client.inputs, client.slots) == (
        "client", "main", ("peers.server",), ("data", "model"))
    assert client.sends == (Send("update", "server", 100_000_000),)
    assert client.receives == (Receive("global", "self", False, _param_types(model)),)
    server = program.partition("round_server")
    assert server.outputs == ("update.0", "update.1") and server.sends == ()
    assert program.bindings == {"data": "data_source|array_data_source",
                                "model": "model|flax_model"}
    assert program.phase("bootstrap") == () and len(program.phase("main")) == 3


def test_a_gather_receive_carries_one_senders_types(model):  # noqa: F811
    data = data_source()
    compiled = (bbjax.Compiler().bind("model", model).bind("data", data)
                .compile(FedAvgRound(2)))
    server = next(p for p in Program.of(compiled).partitions if p.peer_class == "server")
    [gather] = [r for r in server.receives if r.gather]
    assert gather.source_class == "client"
    params = _param_types(model)
    assert gather.values[:len(params)] == params  # no leading sender axis, no arrival mask
    assert all(isinstance(d, int) for v in gather.values for d in v.shape)


class Booted(Module):
    name = "booted"

    def body(self, g: Graph) -> None:
        g.output("heard", g.send("v", g.slot("state").value(), to=g.peers("node")))

    def bootstrap(self, g: Graph) -> None:
        g.output("hello", g.slot("state").value() + 1.0)


def test_bootstrap_partitions_are_found_per_class():
    program = Program.of(bbjax.Compiler().bind("state", holder()).compile(Booted()))
    [boot] = program.phase("bootstrap")
    assert boot.peer_class == "self" and boot.outputs == ("hello",)
    assert program.bootstrap_of([program.partition("booted")]) == (boot,)
    assert program.bootstrap_of([program.partition("booted_node")]) == ()
    assert program.bootstrap_of([program.partition("booted"), boot]) == ()


def _rewritten(compiled: bbjax.Compiled, edit) -> bbjax.Compiled:
    """``compiled`` after ``edit(its model)``, its passport rehashed as a forger would."""
    artifact = ann.copy_model(compiled.model)
    edit(artifact)
    props = {p.key: p.value for p in artifact.metadata_props}
    for function in artifact.functions:
        props[HASH + function.name] = content_hash(function, props)
    del artifact.metadata_props[:]
    onnx.helper.set_model_props(artifact, props)
    return bbjax.Compiled(artifact)


def _function(artifact: onnx.ModelProto, name: str) -> onnx.FunctionProto:
    return next(f for f in artifact.functions if f.name.split("#")[0] == name)


def _wire(artifact: onnx.ModelProto, name: str, op: str) -> onnx.NodeProto:
    return next(n for n in _function(artifact, name).node if n.op_type == op)


def _drop_type(function: onnx.FunctionProto, name: str) -> None:
    kept = [v for v in function.value_info if v.name != name]
    del function.value_info[:]
    function.value_info.extend(kept)


def _set_meta(proto, key: str, value: str | None) -> None:
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != key]
    del proto.metadata_props[:]
    for k, v in kept + ([(key, value)] if value is not None else []):
        proto.metadata_props.add(key=k, value=v)


@pytest.mark.parametrize("deadline", ["-1", "9223372036854775808", "1e9", "²", ""])
def test_a_deadline_that_is_no_u63_integer_is_refused(round_, deadline):
    bad = _rewritten(round_, lambda m: _set_meta(_wire(m, "round", "Send"),
                                                 ann.PREFIX + "deadline_ns", deadline))
    with pytest.raises(ProgramError, match=f"send 'global' has deadline_ns '{deadline}'"):
        Program.of(bad)


@pytest.mark.parametrize("edit, message", [
    (lambda m: _set_meta(_function(m, "round_client"), ann.PEER_CLASS, None),
     "names no peer class"),
    (lambda m: _set_meta(_function(m, "round_client"), ann.PHASE, "later"),
     "phase 'later'"),
    (lambda m: _set_meta(_wire(m, "round_client", "Send"), ann.PORT, None),
     "Send\\) has no 'ai.bytesandbrains.port'"),
    (lambda m: _set_meta(_wire(m, "round_server", "Recv"), ann.SOURCE_CLASS, ""),
     "has no 'ai.bytesandbrains.source_class'"),
    (lambda m: _set_meta(_wire(m, "round_server", "Recv"), ann.PORT, "elsewhere"),
     "receives on port 'elsewhere', which no main partition sends"),
    (lambda m: _set_meta(_wire(m, "round_client", "Send"), ann.PORT, "global"),
     "port 'global' is sent by two partitions"),
    (lambda m: _drop_type(_function(m, "round_server"), "update.0"),
     "receive 'update' has no tensor type for 'update.0'"),
])
def test_malformed_partitions_are_named(round_, edit, message):
    with pytest.raises(ProgramError, match=message):
        Program.of(_rewritten(round_, edit))


@pytest.fixture(scope="module")
def relay() -> bbjax.Compiled:
    return bbjax.Compiler().bind("state", holder()).compile(Relay())


def test_simulate_and_install_default_to_the_compiled_components(relay):
    key = jax.random.PRNGKey(0)
    own = bbjax.simulate(relay, POPULATION, 2, key)
    given = bbjax.simulate(relay, POPULATION, 2, key, bindings={"state": holder()})
    np.testing.assert_array_equal(own.states["node"]["state"]["v"],
                                  given.states["node"]["state"]["v"])
    node = bbjax.install(0, relay, ["relay"], config=NodeConfig(peers={"node": [1]}))
    assert node.steps[0].components["state"] is relay.bindings["state"]


def test_a_loaded_artifact_needs_bindings(relay, tmp_path):
    relay.save(tmp_path / "relay.onnx")
    loaded = bbjax.load(tmp_path / "relay.onnx")
    assert loaded.bindings is None
    with pytest.raises(SimulationError, match="carries no components.*slots \\['state'\\]"):
        bbjax.simulate(loaded, POPULATION, 1, jax.random.PRNGKey(0))
    with pytest.raises(InstallError, match="carries no components"):
        bbjax.install(1, loaded, ["relay_node"])
    with pytest.raises(StepError, match="carries no components"):
        PartitionStep(loaded, "relay_node")
    node = bbjax.install(1, loaded, ["relay_node"], {"state": holder()})
    assert sorted(node.states) == ["state"]


def test_bind_returns_the_called_slots_and_every_backend(relay):
    program = Program.of(relay)
    kernels = backend({("", "Add"): lambda ctx, a, b: a + b})
    bound = program.bind({"state": holder(), "kernels": kernels, "other": holder(name="x")},
                         program.partitions, user="test", error=SimulationError)
    assert sorted(bound) == ["kernels", "state"] and bound["kernels"] is kernels
    with pytest.raises(SimulationError, match="binding 'state': expected a bbjax Component"):
        program.bind({"state": "holder"}, program.partitions, user="test",
                     error=SimulationError)
    with pytest.raises(StepError, match=r"unbound slots \['state'\]: .*\(protocol\|holder\)"):
        program.bind({"kernels": kernels}, program.partitions, user="test", error=StepError)


def test_a_backend_is_no_slot_call_so_the_passport_leaves_it_out():
    kernels = backend({("", "Add"): lambda ctx, a, b: a + b})
    compiled = bbjax.Compiler().bind("state", holder()).bind("kernels", kernels).compile(Relay())
    assert compiled.bindings["kernels"] is kernels
    assert set(Program.of(compiled).bindings) == {"state"}
