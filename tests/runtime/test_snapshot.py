"""Snapshots restore the whole node exactly, and anything that is not a snapshot of a node
the bindings install is a SnapshotError naming the member or field at fault."""

from __future__ import annotations

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
from bbjax.runtime.node import Node, Outbound
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
    """Key paths of the schema's fixed records (maps keyed by slot, port or peer left out)."""
    maps = {("config", "peers"), ("state", "slots"), ("state", "pending"),
            ("state", "gathered"), ("state", "health", "failures"),
            ("state", "health", "retry_at")}
    return [p for p in _paths(_meta_of(data)) if not any(p[:len(m)] == m and len(p) > len(m)
                                                         for m in maps)]


def test_every_missing_meta_field_is_named(snapshots, bindings):
    data = snapshots["gathered"]
    fields = _fixed_fields(data)
    assert ("state", "held") in fields and ("config", "limits", "max_fills") in fields
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
    (("peer",), -1, r"meta.peer: expected an integer"),
    (("peer",), "0", r"meta.peer"),
    (("peer",), True, r"meta.peer"),
    (("targets",), "fedavg", r"meta.targets: expected a list"),
    (("config", "max_pending"), 0, r"max_pending"),
    (("config", "limits", "max_fills"), 2**16, r"max_fills"),
    (("config", "peers", "client"), [1, 1], r"repeats a peer id"),
    (("state", "sequence"), 2**64, r"meta.state.sequence"),
    (("state", "sequence"), 1.5, r"meta.state.sequence"),
    (("state", "slots", "model"), 3, r"slots\['model'\]: 3 state arrays"),
    (("state", "slots", "extra"), 1, r"meta.state.slots: the snapshot has slots"),
    (("state", "pending", "update"), 10**6, r"pending/update/0/0.* missing"),
    (("state", "pending", "other"), 0, r"meta.state.pending"),
    (("state", "gathered", "update"), [3], r"distinct senders"),
    (("state", "gathered", "update"), [1, 1], r"distinct senders"),
    (("state", "inbound"), 5000, r"over max_inbound"),
    (("state", "seen"), 10**6, r"over dedup_window"),
    (("state", "started"), ["fedavg_server"], r"not installed entry partitions"),
    (("state", "held"), [{"peer": 1, "ports": ["update"], "deadline_ns": None,
                          "expiry_ns": None}], r"held\[0\].ports"),
    (("state", "held"), [{"peer": 1, "ports": ["global"], "deadline_ns": -5,
                          "expiry_ns": None}], r"held\[0\].deadline_ns"),
    (("state", "health", "failures"), {"01": 2}, r"not a peer id"),
    (("state", "health", "failures"), {"1": 0}, r"failures\['1'\]"),
    (("state", "events"), [{"rejected": {"kind": "nonsense", "detail": "", "source": None,
                                         "port": None}}], r"kind: expected one of"),
    (("state", "events"), [{"shout": {}}], r"events\[0\]: expected one of"),
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


@pytest.mark.parametrize(("name", "array", "match"), [
    ("slots/model/0", np.zeros((4, 4), np.float32), r"slots/model/0: float32\[4, 4\]"),
    ("slots/model/0", np.zeros((4, 3), np.float64), r"slots/model/0: float64\[4, 3\]"),
    ("slots/model/1", np.zeros((), np.float32), r"slots/model/1: float32\[\]"),
    ("gathered/update/1/2", np.zeros((1,), np.float32), r"gathered/update/1/2"),
    ("gathered/update/1/3", np.zeros((), np.float32), r"gathered/update/1/3: float32"),
    ("seen", np.zeros(2, np.uint64), r"seen: uint64\[2\]"),
])
def test_a_state_or_message_of_the_wrong_dtype_or_shape_is_a_snapshot_error(
        snapshots, bindings, name, array, match):
    data = _replace_member(snapshots["gathered"], name, encode_tensor(array))
    refused(data, bindings, match)


def test_a_queued_round_of_the_wrong_shape_is_a_snapshot_error(snapshots, bindings):
    data = _replace_member(snapshots["pending"], "pending/update/0/4",  # the arrival mask
                           encode_tensor(np.ones(3, bool)))
    refused(data, bindings, r"pending/update/0/4: bool\[3\].*bool\[2\]")


def test_a_member_that_is_no_tensor_is_a_snapshot_error(snapshots, bindings):
    data = _replace_member(snapshots["gathered"], "slots/model/0", b"\x01\x02" + bytes(9))
    refused(data, bindings, "slots/model/0")


def test_a_missing_or_extra_member_is_a_snapshot_error(snapshots, bindings):
    contents = members(snapshots["gathered"])
    del contents["slots/model/1"]
    refused(rezip(contents), bindings, "'slots/model/1' is missing")
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
