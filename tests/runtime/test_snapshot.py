"""Snapshots restore the whole node exactly, and anything that is not a snapshot of a node
the bindings install is a SnapshotError naming the member or field at fault."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from collections.abc import Callable

import chex
import numpy as np
import onnx
import pytest

from bbjax.compiler import annotations as ann
from bbjax.errors import PassportError, SnapshotError
from bbjax.runtime import encode_tensor
from bbjax.runtime.fifo import Queue
from bbjax.runtime.node import Node, Outbound
from bbjax.runtime.node_state import state_to_bytes
from tests.runtime.conftest import mid_round_snapshots, round_network
from tests.runtime.strategies import members, rezip


def with_meta(data: bytes, change: Callable[[dict], None]) -> bytes:
    contents = members(data)
    meta = json.loads(contents["meta.json"])
    change(meta)
    contents["meta.json"] = json.dumps(meta).encode()
    return rezip(contents)


def refused(data: bytes, bindings: dict, match: str) -> SnapshotError:
    with pytest.raises(SnapshotError, match=match) as info:
        Node.restore(data, bindings)
    return info.value


# -- faithful restores ----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["gathered", "pending"])
def test_a_restored_node_is_the_node_and_continues_like_it(gather_case, snapshots, bindings,
                                                           which):
    data = snapshots[which]
    restored = Node.restore(data, bindings)
    assert restored.snapshot() == data  # every field of the state, byte for byte
    original = Node.restore(data, bindings)
    for node in (original, restored):
        node.deliver(gather_case.valid[1])
    steps = [node.poll(now=1.0) for node in (original, restored)]
    assert [repr(s) for s in steps[0]] == [repr(s) for s in steps[1]]
    kinds = [type(s).__name__ for s in steps[0]]
    assert kinds.count("Rejected") == 3  # the garbage, the non-bytes and the duplicate
    chex.assert_trees_all_equal(original.states, restored.states)


def test_the_same_node_gives_the_same_bytes(gather_case, snapshots):
    again = mid_round_snapshots(gather_case)
    assert again == snapshots
    assert list(members(snapshots["gathered"]))[:2] == ["meta.json", "model.onnx"]


def test_a_client_snapshot_restores_its_state_and_sends_the_same_bytes(setup):
    _, bindings = setup
    server, clients = round_network(setup)
    server.start()
    envelopes = [s for s in server.poll() if isinstance(s, Outbound)]
    client = clients[envelopes[0].peer]
    client.deliver(envelopes[0].data)
    client.poll()                           # consumes the message: state moves on
    client.deliver(envelopes[0].data)       # a duplicate, still queued
    restored = Node.restore(client.snapshot(), bindings)
    chex.assert_trees_all_equal(restored.states, client.states)
    out_a, out_b = client.poll(), restored.poll()
    assert [type(s).__name__ for s in out_a] == [type(s).__name__ for s in out_b] == ["Rejected"]
    server.start()
    again = next(s for s in server.poll() if isinstance(s, Outbound) and s.peer == client.peer)
    for node in (client, restored):
        node.deliver(again.data)
    sent = [[s.data for s in node.poll() if isinstance(s, Outbound)] for node in (client, restored)]
    assert sent[0] == sent[1] and len(sent[0]) == 1


# -- bytes that are no snapshot -------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"PK\x05\x06" + bytes(18), b"garbage", None, "text"])
def test_bytes_that_are_no_archive_are_a_snapshot_error(bindings, data):
    refused(data, bindings, "not a snapshot archive|a snapshot is bytes|'meta.json' is missing")


def test_a_released_buffer_is_a_snapshot_error(bindings):
    view = memoryview(b"PK\x03\x04")
    view.release()
    refused(view, bindings, "not a snapshot archive")


def test_truncations_are_a_snapshot_error(snapshots, bindings):
    data = snapshots["gathered"]
    for size in (0, 100, len(data) // 2, len(data) - 1):
        refused(data[:size], bindings, "not a snapshot archive")


def test_a_compressed_member_is_refused_before_it_is_read(snapshots, bindings):
    data = rezip(members(snapshots["gathered"]), zipfile.ZIP_DEFLATED)
    refused(data, bindings, "compressed")


def test_a_format_1_npz_snapshot_is_refused(bindings):
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(b'{"format": 1}', np.uint8), model=np.zeros(3, np.uint8))
    refused(buffer.getvalue(), bindings, "member 'meta.json' is missing")


@pytest.mark.parametrize("meta", [b"\xff", b"{", b"[]", b'{"format": NaN}',
                                  b'{"format": 2, "format": 2}', b"[" * 100_000])
def test_meta_that_is_not_the_schema_is_a_snapshot_error(snapshots, bindings, meta):
    contents = members(snapshots["gathered"])
    contents["meta.json"] = meta
    refused(rezip(contents), bindings, "meta")


def _paths(value: object, path: tuple = ()) -> list[tuple]:
    """Every key path of the JSON objects in ``value``."""
    if not isinstance(value, dict):
        return []
    return [p for k, v in value.items() for p in [(*path, k), *_paths(v, (*path, k))]]


def _meta_of(data: bytes) -> dict:
    return json.loads(members(data)["meta.json"])


def _fixed_fields(data: bytes) -> list[tuple]:
    """Key paths of the schema's fixed records (the map keyed by class left out)."""
    return [p for p in _paths(_meta_of(data)) if not (p[:2] == ("config", "peers") and len(p) > 2)]


def test_every_missing_meta_field_is_named(snapshots, bindings):
    data = snapshots["gathered"]
    fields = _fixed_fields(data)
    assert ("config", "peers") in fields and ("config", "limits", "max_fills") in fields
    for path in fields:
        def drop(meta, path=path):
            target = meta
            for key in path[:-1]:
                target = target[key]
            del target[path[-1]]
        named = "snapshot format None" if path == ("format",) else \
            rf"meta{''.join('.' + k for k in path[:-1])}: missing fields \['{path[-1]}'\]"
        refused(with_meta(data, drop), bindings, named)


@pytest.mark.parametrize(("path", "value", "match"), [
    (("format",), 1, "format 1"),
    (("format",), 2, "meta.format: snapshot format 2, this version reads 3"),
    (("peer",), -1, r"meta.peer: expected an integer"),
    (("peer",), "0", r"meta.peer"),
    (("peer",), True, r"meta.peer"),
    (("targets",), "fedavg", r"meta.targets: expected a list"),
    (("config", "max_pending"), 0, r"max_pending"),
    (("config", "limits", "max_fills"), 2**16, r"max_fills"),
    (("config", "peers", "client"), [1, 1], r"repeats a peer id"),
    (("config", "inputs"), ["x"], r"'input/0' is missing"),
    (("config", "state"), {}, r"meta.config: missing fields \[\], unknown fields \['state'\]"),
    (("targets",), ["nowhere"], r"does not install"),
])
def test_a_wrong_meta_field_is_a_snapshot_error_naming_it(snapshots, bindings, path, value,
                                                          match):
    def change(meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    refused(with_meta(snapshots["gathered"], change), bindings, match)


def _replace_member(data: bytes, name: str, payload: bytes) -> bytes:
    contents = members(data)
    assert name in contents
    contents[name] = payload
    return rezip(contents)


def test_the_state_is_checked_against_the_node_the_snapshot_installs(snapshots, bindings):
    """The state's fields (``test_node_state.py`` checks each) are read against the config
    of the snapshot's own meta: fewer inbound envelopes allowed there refuses the state."""
    data = with_meta(snapshots["gathered"], lambda meta: meta["config"].update(max_inbound=1))
    refused(data, bindings, r"state.inbound: 2 items, over max_inbound = 1")
    restored = Node.restore(snapshots["pending"], bindings)
    message = list(next(iter(restored.state.pending["update"])))
    message[-1] = np.ones(3, bool)  # the arrival mask of a round of three senders
    state = dataclasses.replace(restored.state, pending={"update": Queue([message])})
    data = _replace_member(snapshots["pending"], "state", state_to_bytes(state))
    refused(data, bindings, r"state.pending\['update'\]\[0\]\[\d\]: bool\[3\].*bool\[2\]")


def test_a_state_member_that_is_no_state_is_a_snapshot_error(snapshots, bindings):
    data = _replace_member(snapshots["gathered"], "state", b"\x01\x02" + bytes(9))
    refused(data, bindings, r"state: starts with b'\\x01\\x02\\x00\\x00', not b'BBNS'")
    state = members(snapshots["gathered"])["state"]
    flipped = state[:-5] + bytes([state[-5] ^ 1]) + state[-4:]  # the last field's last byte
    data = _replace_member(snapshots["gathered"], "state", flipped)
    refused(data, bindings, r"state: stored CRC32")


def test_a_missing_or_extra_member_is_a_snapshot_error(snapshots, bindings):
    contents = members(snapshots["gathered"])
    del contents["state"]
    refused(rezip(contents), bindings, "'state' is missing")
    contents = members(snapshots["gathered"])
    contents["slots/extra/0"] = encode_tensor(np.zeros(3, np.float32))
    refused(rezip(contents), bindings, r"slots/extra/0.*belong to nothing")


def test_a_model_that_is_no_onnx_is_a_snapshot_error(snapshots, bindings):
    data = _replace_member(snapshots["gathered"], "model.onnx", b"\xff\xff\xff")
    refused(data, bindings, "model.onnx")


def test_a_model_whose_strings_are_not_utf8_is_a_snapshot_error(snapshots, bindings):
    model = members(snapshots["gathered"])["model.onnx"]
    at = model.index(b"ai.bytesandbrains.compiled")
    broken = model[:at] + b"\xff" + model[at + 1:]  # same length: it still parses
    data = _replace_member(snapshots["gathered"], "model.onnx", broken)
    refused(data, bindings, r"model.onnx.metadata_props.key: a string field is not UTF-8")


def test_a_model_with_a_slot_call_missing_its_slot_is_a_snapshot_error(snapshots, bindings):
    model = onnx.ModelProto.FromString(members(snapshots["gathered"])["model.onnx"])
    node = next(n for f in model.functions for n in f.node if ann.is_slot_call(n))
    prop = next(p for p in node.metadata_props if p.key == ann.SLOT)
    prop.key = ann.SLOT + "_"
    data = _replace_member(snapshots["gathered"], "model.onnx", model.SerializeToString())
    refused(data, bindings, "does not install")


def test_bindings_the_artifact_was_not_compiled_with_are_a_snapshot_error(
        snapshots, bindings):
    from bbjax.components import weighted_mean
    wrong = dict(bindings, model=weighted_mean(2, {"w": np.zeros(2)}))
    error = refused(snapshots["gathered"], wrong, "does not install")
    assert isinstance(error.__cause__, PassportError)
    with pytest.raises(SnapshotError, match="does not install"):
        Node.restore(snapshots["gathered"], {})
