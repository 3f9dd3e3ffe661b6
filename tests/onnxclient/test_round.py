"""An onnxruntime client takes part in FedAvg rounds against a JAX server over envelope bytes:
two JAX clients and one OnnxClient end with the global model of three JAX clients (their data
sources shuffle with threefry, which the client model draws in standard ONNX ops)."""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
import optax
import pytest
from flax import nnx

import bbjax
from bbjax import cli
from bbjax.compiler.export_client import CLIENT_METADATA, client_state, export_client
from bbjax.components import Component, Role, flax_model, padded_data_source
from bbjax.errors import CompileError, InvalidArgument
from bbjax.modules import FedAvgRound
from bbjax.onnxclient import OnnxClient, Rejected, codec
from bbjax.runtime import NodeConfig
from bbjax.models import LogisticRegression, cross_entropy

SERVER, CLIENTS, ROUNDS = 0, (1, 2, 3), 2
MODEL = flax_model(LogisticRegression(6, 3, rngs=nnx.Rngs(0)), optax.sgd(0.3), cross_entropy)


def _shard(peer: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(peer)
    x = r.normal(size=(16, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0).astype(np.int32)


SIZES = {1: 16, 2: 11, 3: 13}  # real rows of each client's 16 padded ones
SOURCES = {p: padded_data_source(*_shard(p), size=SIZES[p], batch_size=4) for p in CLIENTS}


@pytest.fixture(scope="module")
def compiled():
    return (bbjax.Compiler().bind("model", MODEL).bind("data", SOURCES[1])
            .compile(FedAvgRound(local_steps=2)))


def _jax_nodes(compiled, clients):
    server = bbjax.install(SERVER, compiled, ["fedavg", "fedavg_server"],
                           {"model": MODEL, "data": SOURCES[1]},
                           NodeConfig(peers={"client": list(CLIENTS), "server": [SERVER]}))
    nodes = {p: bbjax.install(p, compiled, ["fedavg_client"],
                              {"model": MODEL, "data": SOURCES[p]},
                              NodeConfig(peers={"server": [SERVER]})) for p in clients}
    return server, nodes


def _round(server, peers: dict[int, Any]) -> dict[str, np.ndarray]:
    """One round: Nodes and OnnxClients alike take envelope bytes and poll."""
    outputs: dict[str, np.ndarray] = {}
    everyone = {SERVER: server, **peers}
    server.start()
    pending = [server]
    while pending:
        node = pending.pop(0)
        for event in node.poll():
            if hasattr(event, "data"):
                everyone[event.peer].deliver(event.data)
                pending.append(everyone[event.peer])
            elif hasattr(event, "value"):
                outputs[event.name] = np.asarray(event.value)
            else:
                raise AssertionError(f"unexpected event {event}")
    return outputs


def _global(server) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree.leaves(server.states["model"].params)]


def test_an_onnx_client_round_gives_the_global_model_of_jax_clients(compiled, tmp_path):
    server, nodes = _jax_nodes(compiled, CLIENTS)
    reference = [_round(server, nodes) for _ in range(ROUNDS)]
    want, trained = _global(server), _leaves(nodes[3].states["model"])

    artifact, model_file = tmp_path / "fedavg.onnx", tmp_path / "client.onnx"
    compiled.save(artifact)
    assert cli.main(["export-client", str(artifact), "--target", "client",
                     "-o", str(model_file)]) == 0
    server, nodes = _jax_nodes(compiled, CLIENTS)
    jax_client = nodes.pop(3)  # its initial state is what the onnx client starts from
    state = client_state(jax_client.states)
    assert sorted(state) == sorted(n for names in _state_names(model_file).values()
                                   for n in names)
    onnx_client = OnnxClient(model_file, peer=3, peers={"server": [SERVER]}, state=state)
    mixed = [_round(server, {**nodes, 3: onnx_client}) for _ in range(ROUNDS)]

    for got, wanted in zip(_global(server), want):
        np.testing.assert_allclose(got, wanted, rtol=2e-5, atol=1e-6)
    for r in range(ROUNDS):
        np.testing.assert_allclose(mixed[r]["train_loss"], reference[r]["train_loss"],
                                   rtol=2e-5)
        assert int(mixed[r]["participants"]) == 3
    kernel = onnx_client.state["state.model.params.out.kernel"]
    np.testing.assert_allclose(kernel, np.asarray(trained[1]), rtol=2e-5, atol=1e-6)


def _leaves(state: Any) -> list[Any]:
    return [jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
            else x for x in jax.tree.leaves(state)]


def _state_names(path) -> dict[str, list[str]]:
    import onnx
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}
                      [CLIENT_METADATA])
    return {slot: leaves["inputs"] for slot, leaves in meta["state"].items()}


def test_the_exported_model_carries_a_given_initial_state(compiled):
    state = {"model": MODEL.init(jax.random.key(5)), "data": SOURCES[2].init(jax.random.key(6))}
    model = export_client(compiled, "client", states=state)
    client = OnnxClient(model, peer=2, peers={"server": [SERVER]})
    np.testing.assert_array_equal(client.state["state.data.x"], np.asarray(state["data"].x))
    np.testing.assert_array_equal(client.state["state.data.key"],
                                  np.asarray(jax.random.key_data(state["data"].key)))
    np.testing.assert_array_equal(client.state["state.model.params.out.bias"],
                                  np.asarray(state["model"].params["out"]["bias"]))


def test_the_onnx_client_rejects_hostile_envelopes_without_raising(compiled):
    state = {"model": MODEL.init(jax.random.key(5)), "data": SOURCES[2].init(jax.random.key(6))}
    client = OnnxClient(export_client(compiled, "client", states=state), peer=2,
                        peers={"server": [SERVER]})
    good = [np.zeros(3, np.float32), np.zeros((6, 3), np.float32)]

    def envelope(source="0", arrays=good, sites=("global/0", "global/1"), hashes=None):
        fills = tuple(codec.Fill(site, codec.type_hash(a.dtype, a.shape) if hashes is None
                                 else hashes, codec.encode_tensor(a))
                      for site, a in zip(sites, arrays))
        return codec.encode(codec.Envelope(source, fills))

    hostile = {
        "malformed": [b"garbage", envelope(source="01"), envelope(sites=("global/0", "global/x"))],
        "truncated": [envelope()[:20]],
        "from_self": [envelope(source="2")],
        "unexpected_port": [envelope(sites=("nope/0", "nope/1"))],
        "count_mismatch": [envelope(arrays=good[:1], sites=("global/0",))],
        "duplicate_fill": [envelope(sites=("global/0", "global/0"))],
        "type_mismatch": [envelope(hashes=7)],
        "shape_mismatch": [envelope(arrays=[np.zeros(4, np.float32), good[1]],
                                    hashes=None, sites=("global/0", "global/1"))],
    }
    for kind, messages in hostile.items():
        for data in messages:
            client.deliver(data)
            events = client.poll()
            assert [type(e) for e in events] == [Rejected], (kind, events)
            assert events[0].kind in (kind, "type_mismatch"), (kind, events[0])
    client.deliver(envelope())
    client.deliver(envelope())
    events = client.poll()
    assert [e.kind for e in events if isinstance(e, Rejected)] == ["duplicate"]
    assert sum(1 for e in events if hasattr(e, "data")) == 1


def test_export_client_refuses_a_partition_that_keeps_an_opaque_slot():
    source = bbjax.components.array_data_source(*_shard(1), batch_size=8)
    compiled = bbjax.Compiler().bind("model", MODEL).bind("data", source).compile(FedAvgRound(1))
    with pytest.raises(CompileError, match="'data': opaque: array_data_source.next_batch"):
        export_client(compiled, "client")


class Noise(bbjax.Module):
    name = "noise"

    def body(self, g):
        g.output("z", g.slot("noise").sample())


def test_export_client_refuses_ops_onnxruntime_lacks():
    def sample(state):
        key, sub = jax.random.split(state)
        return key, jax.random.normal(sub, (3,))  # erf_inv: an ai.bytesandbrains.lax op

    noise = Component(Role.PROTOCOL, lambda key: jax.random.key_data(key), {"sample": sample})
    compiled = bbjax.Compiler().bind("noise", noise).compile(Noise())
    with pytest.raises(CompileError, match="ai.bytesandbrains.lax::ErfInv"):
        export_client(compiled, "self")


def test_the_onnx_client_refuses_a_bad_model_or_state(compiled):
    model = export_client(compiled, "client")
    with pytest.raises(InvalidArgument, match="has no value"):
        OnnxClient(model, peer=2, peers={"server": [SERVER]})
    with pytest.raises(InvalidArgument, match="not an exported client"):
        OnnxClient(compiled.partition_model(compiled.partitions[0]), peer=2, peers={})
    state = {"model": MODEL.init(jax.random.key(5)), "data": SOURCES[2].init(jax.random.key(6))}
    model = export_client(compiled, "client", states=state)
    with pytest.raises(InvalidArgument, match="must be float32"):
        OnnxClient(model, peer=2, peers={"server": [SERVER]},
                   state={"state.data.x": np.zeros((16, 5), np.float32)})
    with pytest.raises(InvalidArgument, match="names no leaves"):
        OnnxClient(model, peer=2, peers={"server": [SERVER]}, state={"state.nope": 1})
    with pytest.raises(InvalidArgument, match="needs inputs"):
        OnnxClient(model, peer=2, peers={})
    with pytest.raises(InvalidArgument, match="peer id"):
        OnnxClient(model, peer=-1, peers={"server": [SERVER]})


def test_the_cli_reports_a_bad_artifact(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    assert cli.main(["export-client", str(bad), "--target", "client",
                     "-o", str(tmp_path / "c.onnx")]) == 2
    assert "cannot read artifact" in capsys.readouterr().err
