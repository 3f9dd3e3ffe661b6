"""A real installed Node facing a hostile peer: every lie is one Rejected event of the exact
kind, naming the envelope's source and the port, and the round's valid messages still run
and close with exactly the result they give alone."""

from __future__ import annotations

import dataclasses
import math
import re
import struct
from pathlib import Path
from typing import get_args

import jax.numpy as jnp
import numpy as np
import pytest

from bbjax.compiler import Compiler
from bbjax.dsl import Module
from bbjax.errors import InvalidArgument, MalformedEnvelope
from bbjax.runtime import (
    Envelope,
    Fill,
    Limits,
    decode,
    decode_tensor,
    encode,
    encode_tensor,
)
from bbjax.runtime.install import install
from bbjax.runtime.node import AppOutput, Node, NodeConfig, Rejected, RejectKind
from tests.runtime.conftest import Case, outbound, results, slot_bytes
from tests.runtime.strategies import (
    BAD_INDICES,
    BAD_SOURCES,
    WIDE_LIMITS,
    fill_of,
    retyped,
)

CASES = ["client_case", "gather_case"]  # a plain receive port; a gather port


@pytest.fixture(params=CASES)
def case(request) -> Case:
    return request.getfixturevalue(request.param)


def fills(case: Case) -> list[Fill]:
    """The fills of the round's first valid envelope."""
    return list(decode(case.valid[0]).fills)


def wire(case: Case, fills: list[Fill], source: str | None = None, **fields) -> bytes:
    return encode(Envelope(case.senders[0] if source is None else source, tuple(fills),
                           **fields), limits=WIDE_LIMITS)


def rejections(steps: list) -> list[tuple]:
    return [(s.kind, s.source, s.port) for s in steps if isinstance(s, Rejected)]


def round_after(case: Case, *lies: bytes) -> list:
    """Deliver ``lies``, then the round's valid envelopes, to the reset node; poll once."""
    node = case.reset()
    for data in lies:
        node.deliver(data)
    return round_after_delivered(node, case)


def round_after_delivered(node: Node, case: Case) -> list:
    for data in case.valid:
        node.deliver(data)
    return node.poll(now=0.0)


def lied(case: Case, i: int, **change) -> bytes:
    """The first valid envelope with fill ``i`` changed (``site``, ``type_hash``, ``payload``)."""
    out = fills(case)
    out[i] = dataclasses.replace(out[i], **change)
    return wire(case, out)


def assert_rejected_then_round_runs(case: Case, lie: bytes, kind: str, port: str | None = "",
                                    source: str | None = "") -> None:
    steps = round_after(case, lie)
    port = case.port if port == "" else port
    source = case.senders[0] if source == "" else source
    assert rejections(steps) == [(kind, source, port)]
    case.check_round(steps)


# -- fills that lie about their array -------------------------------------------------------


def test_a_fill_lying_about_its_shape_is_a_shape_mismatch(case):
    array = decode_tensor(fills(case)[0].payload)
    wrong = retyped(array, shape=(*array.shape, 2))  # the right hash, a bigger array
    assert_rejected_then_round_runs(case, lied(case, 0, payload=encode_tensor(wrong)),
                                    "shape_mismatch")


def test_a_fill_lying_about_its_dtype_is_a_type_mismatch(case):
    array = decode_tensor(fills(case)[0].payload)
    assert array.dtype == np.float32
    wrong = array.astype(np.float64)  # float64 bytes under the float32 type hash
    assert_rejected_then_round_runs(case, lied(case, 0, payload=encode_tensor(wrong)),
                                    "type_mismatch")


def test_a_wrong_type_hash_is_a_type_mismatch(case):
    fill = fills(case)[1]
    assert_rejected_then_round_runs(case, lied(case, 1, type_hash=fill.type_hash ^ 1),
                                    "type_mismatch")


def test_a_consistent_fill_of_another_type_is_a_type_mismatch(case):
    array = decode_tensor(fills(case)[0].payload).astype(np.float64)
    other = fill_of(fills(case)[0].site, array)  # hash and payload agree: float64
    assert_rejected_then_round_runs(case, lied(case, 0, type_hash=other.type_hash,
                                               payload=other.payload), "type_mismatch")


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\xff\x00", b"\x01\x02" + bytes(7)])
def test_a_payload_that_is_no_tensor_is_malformed(case, payload):
    assert_rejected_then_round_runs(case, lied(case, 0, payload=payload), "malformed")


# -- sources and sites ----------------------------------------------------------------------


@pytest.mark.parametrize("source", BAD_SOURCES)
def test_a_source_that_is_no_peer_id_is_malformed(case, source):
    assert_rejected_then_round_runs(case, wire(case, fills(case), source), "malformed",
                                    port=None, source=source)


def test_an_envelope_claiming_to_come_from_the_node_itself_is_refused(case):
    own = str(case.node.peer)
    assert_rejected_then_round_runs(case, wire(case, fills(case), own), "from_self",
                                    port=None, source=own)


@pytest.mark.parametrize("index", BAD_INDICES)
def test_a_site_whose_index_is_no_array_index_is_malformed(case, index):
    lie = lied(case, 0, site=f"{case.port}/{index}")
    assert_rejected_then_round_runs(case, lie, "malformed")


@pytest.mark.parametrize(("site", "port"), [("nowhere/0", "nowhere"), ("global_", None),
                                            ("update", None), ("x/update/0", "x/update")])
def test_a_site_no_partition_receives_is_an_unexpected_port(case, site, port):
    assert_rejected_then_round_runs(case, lied(case, 0, site=site), "unexpected_port", port)


# -- fill counts ----------------------------------------------------------------------------


def test_a_missing_fill_is_a_count_mismatch(case):
    assert_rejected_then_round_runs(case, wire(case, fills(case)[1:]), "count_mismatch")


def test_a_fill_past_the_ports_arrays_is_a_count_mismatch(case):
    first = fills(case)
    extra = dataclasses.replace(first[0], site=f"{case.port}/{len(first)}")
    assert_rejected_then_round_runs(case, wire(case, [*first, extra]), "count_mismatch")


def test_a_fill_sent_twice_is_a_duplicate_fill(case):
    first = fills(case)
    assert_rejected_then_round_runs(case, wire(case, [*first, first[0]]), "duplicate_fill")


def test_an_envelope_without_fills_is_accepted_and_changes_nothing(case):
    steps = round_after(case, wire(case, []))
    assert rejections(steps) == []
    case.check_round(steps)


# -- envelope fields and bytes --------------------------------------------------------------


@pytest.mark.parametrize(("correlation", "deadline_ns"),
                         [(2**64 - 1, 2**64 - 1), (0, 2**63), (2**63, 1), (1, 0)])
def test_any_correlation_and_deadline_a_u64_holds_is_accepted(case, correlation, deadline_ns):
    # 2**63 and above read as negative in a signed 64-bit field; the node never interprets them
    node = case.reset()
    for data, source in zip(case.valid, case.senders):
        node.deliver(encode(Envelope(source, decode(data).fills, correlation, deadline_ns)))
    steps = node.poll(now=0.0)
    assert rejections(steps) == []
    case.check_round(steps)


def test_the_encoder_refuses_negative_or_oversized_u64_fields():
    for fields in ({"deadline_ns": -1}, {"correlation": -1}, {"deadline_ns": 2**64}):
        with pytest.raises(MalformedEnvelope):
            encode(Envelope("1", (), **fields))


def test_truncated_wrong_version_and_oversized_bytes_have_their_kinds(case):
    valid = case.valid[0]
    wrong_version = valid[:4] + struct.pack("<H", 2) + valid[6:]
    long_source = wire(case, fills(case), "1" * 300)  # over the default 256-byte id cap
    too_big = bytes(case.node.config.limits.max_envelope_bytes + 1)
    steps = round_after(case, valid[:-1], wrong_version, long_source, too_big)
    assert rejections(steps) == [("oversized", None, None), ("truncated", None, None),
                                 ("wrong_version", None, None), ("oversized", None, None)]
    case.check_round(steps)


def _released() -> memoryview:
    view = memoryview(b"BBJE")
    view.release()
    return view


@pytest.mark.parametrize("data", [None, "text", 10**12, [66, 66], _released()])
def test_deliver_refuses_what_is_not_bytes_without_raising(case, data):
    node = case.reset()
    assert node.deliver(data) is False
    steps = round_after_delivered(node, case)
    assert rejections(steps) == [("malformed", None, None)]
    case.check_round(steps)


def test_a_duplicate_envelope_is_refused_once_accepted(case):
    steps = round_after(case, *case.valid)
    assert rejections(steps) == [("duplicate", None, None)] * len(case.valid)
    case.check_round(steps)  # the first copies ran the round once


def test_a_full_port_refuses_more_messages(setup):
    compiled, bindings = setup
    node = install(1, compiled, ["round_client"], bindings,
                   NodeConfig(peers={"server": [0]}, max_pending=1))
    server = install(0, compiled, ["round"], bindings, NodeConfig(peers={"client": [1]}))
    server.start()
    valid = outbound(server.poll())[0].data
    again = encode(dataclasses.replace(decode(valid), correlation=99))
    node.deliver(valid)
    node.deliver(again)  # accepted in the same poll, before the step consumes the first
    steps = node.poll()
    assert rejections(steps) == [("pending_full", "0", "global")]
    assert len(outbound(steps)) == 1 and node.pending("global") == 0


# -- gather rounds --------------------------------------------------------------------------


def test_a_stranger_sending_to_a_gather_is_an_unexpected_sender(gather_case):
    assert_rejected_then_round_runs(gather_case, wire(gather_case, fills(gather_case), "7"),
                                    "unexpected_sender", source="7")


def test_a_lie_does_not_replace_the_senders_accepted_message(gather_case):
    node = gather_case.reset()
    node.deliver(gather_case.valid[0])
    first = node.poll(now=0.0)
    array = decode_tensor(fills(gather_case)[0].payload)
    node.deliver(lied(gather_case, 0, payload=encode_tensor(retyped(array, shape=(1,)))))
    node.deliver(gather_case.valid[1])
    steps = first + node.poll(now=0.0)
    assert rejections(steps) == [("shape_mismatch", "1", "update")]
    gather_case.check_round(steps)


def test_close_after_lies_queues_exactly_what_arrived(gather_case):
    node = gather_case.reset()
    node.deliver(gather_case.valid[0])
    node.poll(now=0.0)
    node.close("update")
    want = results(node.poll(now=0.0)), slot_bytes(node)
    node = gather_case.reset()
    node.deliver(lied(gather_case, 1, type_hash=0))
    node.deliver(gather_case.valid[0])
    node.deliver(wire(gather_case, fills(gather_case), "2")[:-2])  # client 2's, truncated
    assert rejections(node.poll(now=0.0)) == [("type_mismatch", "1", "update"),
                                              ("truncated", None, None)]
    node.close("update")
    steps = node.poll(now=0.0)
    assert (results(steps), slot_bytes(node)) == want
    assert int(next(s.value for s in steps if isinstance(s, AppOutput)
                    and s.name == "participants")) == 1


def test_close_with_nothing_arrived_runs_the_round_with_every_sender_masked(gather_case):
    node = gather_case.reset()
    before = slot_bytes(node)
    node.close("update")
    outputs = {s.name: s.value for s in node.poll(now=0.0) if isinstance(s, AppOutput)}
    assert int(outputs["participants"]) == 0
    assert slot_bytes(node) == before  # no update arrived: the global model is kept


@pytest.mark.parametrize("port", ["global", "nowhere", "", 3, None, ["update"]])
def test_close_of_a_port_that_is_no_gather_is_an_invalid_argument(gather_case, port):
    node = gather_case.reset()
    with pytest.raises(InvalidArgument, match="gather port"):
        node.close(port)
    assert node.pending("update") == 0


def test_a_gather_over_an_empty_class_closes(fedavg):
    compiled, bindings = fedavg
    server = install(0, compiled, ["fedavg", "fedavg_server"], bindings,
                     NodeConfig(peers={"client": [], "server": [0]}))
    server.start()
    assert outbound(server.poll()) == []
    server.close("update")
    outputs = {s.name: s.value for s in server.poll() if isinstance(s, AppOutput)}
    assert int(outputs["participants"]) == 0


# -- fills for two ports in one envelope ----------------------------------------------------


class TwoPorts(Module):
    name = "two_ports"

    def body(self, g):
        params = g.slot("model").params()
        clients = g.peers("client")
        kernel = g.send("kernel", params["dense"]["kernel"], to=clients)
        bias = g.send("bias", params["dense"]["bias"], to=clients)
        g.output("total", jnp.sum(kernel) + jnp.sum(bias))


def test_an_envelope_for_two_ports_is_accepted_or_refused_whole(net_model):
    compiled = Compiler().bind("model", net_model).compile(TwoPorts())
    server = install(0, compiled, ["two_ports"], {"model": net_model},
                     NodeConfig(peers={"client": [1]}))
    client = install(1, compiled, ["two_ports_client"], {"model": net_model})
    server.start()
    valid = outbound(server.poll())[0].data
    by_port = {f.site: f for f in decode(valid).fills}
    assert sorted(by_port) == ["bias/0", "kernel/0"]
    kernel = decode_tensor(by_port["kernel/0"].payload)
    bad_kernel = dataclasses.replace(by_port["kernel/0"],
                                     payload=encode_tensor(retyped(kernel, shape=(3, 4))))
    client.deliver(encode(Envelope("0", (by_port["bias/0"], bad_kernel))))
    refused = client.poll()
    assert rejections(refused) == [("shape_mismatch", "0", "kernel")]
    assert client.pending("bias") == client.pending("kernel") == 0  # bias was not kept alone
    client.deliver(valid)
    outputs = [s for s in client.poll() if isinstance(s, AppOutput)]
    want = float(np.sum(kernel) + np.sum(decode_tensor(by_port["bias/0"].payload)))
    assert [s.name for s in outputs] == ["total"]
    assert float(outputs[0].value) == pytest.approx(want, rel=1e-6)


def test_limits_given_to_the_node_decide_what_is_oversized(setup):
    compiled, bindings = setup
    node = install(1, compiled, ["round_client"], bindings,
                   NodeConfig(peers={"server": [0]}, limits=Limits(max_fills=1)))
    two = encode(Envelope("0", (Fill("global/0", 0, b""), Fill("global/1", 0, b""))))
    node.deliver(two)
    assert rejections(node.poll()) == [("oversized", None, None)]


def test_docs_runtime_tables_exactly_the_reject_kinds():
    text = (Path(__file__).parents[2] / "docs" / "runtime.md").read_text()
    assert re.findall(r"^\| `(\w+)` \|", text, re.MULTILINE) == list(get_args(RejectKind))


def test_host_inputs_are_checked_and_an_unsendable_message_is_an_event(setup):
    from bbjax.errors import InvalidArgument
    from bbjax.runtime import Outbound, Unsendable

    compiled, bindings = setup
    server = install(0, compiled, ["round", "round_server"], bindings,
                     NodeConfig(peers={"client": [1, 2], "server": [0]},
                                limits=Limits(max_fills=1)))  # the global model needs 2
    for now in (math.nan, math.inf, -1.0, "1"):
        with pytest.raises(InvalidArgument, match="now must be a finite number >= 0"):
            server.poll(now=now)
    for peer in (-1, 2**31, 1.5, True, "1"):
        with pytest.raises(InvalidArgument, match="peer must be a peer id"):
            server.report_send_failure(peer)
        with pytest.raises(InvalidArgument, match="peer must be a peer id"):
            server.report_send_success(peer)
    server.start()
    steps = server.poll(now=0.0)
    unsendable = [s for s in steps if isinstance(s, Unsendable)]
    assert sorted(s.peer for s in unsendable) == [1, 2]
    assert all(s.ports == ("global",) and "fills" in s.detail for s in unsendable)
    assert not [s for s in steps if isinstance(s, Outbound)]
    assert server.poll(now=1.0) == []  # nothing held, nothing wedged
