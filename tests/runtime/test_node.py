"""Nodes exchanging only envelope bytes run a compiled round; bad input never crashes them."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

from bbjax.compiler import Compiler
from bbjax.compiler.annotations import copy_model as ann_copy
from bbjax.components import weighted_mean
from bbjax.dsl import Module
from bbjax.errors import InstallError, InvalidArgument, PassportError
from bbjax.runtime.install import install
from bbjax.runtime.node import AppOutput, NodeConfig, Outbound, Rejected
from tests.runtime.conftest import CLIENTS, fedavg_network, round_network, ship
from tests.runtime.test_step import _direct_client


def test_a_round_closes_over_envelope_bytes(setup):
    _, bindings = setup
    server, clients = round_network(setup)
    nodes = {0: server, **clients}
    server.start()
    first = server.poll()
    assert sorted(s.peer for s in first if isinstance(s, Outbound)) == list(CLIENTS)
    ship(first, nodes)
    for peer in CLIENTS:
        ship(clients[peer].poll(), nodes)
    outputs = [s for s in server.poll() if isinstance(s, AppOutput)]
    assert len(outputs) == 2 * len(CLIENTS)  # one update (two arrays) per client arrival
    server_params = bindings["model"].call("params", server.states["model"])[1]
    for i, peer in enumerate(CLIENTS):  # updates arrive in the order the clients were polled
        arrays = [np.asarray(o.value) for o in outputs[2 * i: 2 * i + 2]]
        want = _direct_client(bindings, server_params, jax.random.PRNGKey(peer))
        chex.assert_trees_all_close(arrays, [np.asarray(w) for w in want], atol=1e-6)


def test_duplicates_and_garbage_become_events(setup):
    server, clients = round_network(setup)
    server.start()
    envelopes = [s for s in server.poll() if isinstance(s, Outbound)]
    client = clients[envelopes[0].peer]
    client.deliver(envelopes[0].data)
    client.deliver(envelopes[0].data)         # duplicate
    client.deliver(b"not an envelope")       # garbage
    client.deliver(envelopes[0].data[:-3])   # truncated
    steps = client.poll()
    kinds = sorted(s.kind for s in steps if isinstance(s, Rejected))
    assert kinds == ["duplicate", "malformed", "truncated"]
    assert sum(isinstance(s, Outbound) for s in steps) == 1  # the round still ran once


def test_unexpected_port_is_rejected_and_accepted_data_kept(setup):
    server, clients = round_network(setup)
    server.start()
    to = {s.peer: s.data for s in server.poll() if isinstance(s, Outbound)}
    clients[1].deliver(to[1])
    update = next(s.data for s in clients[1].poll() if isinstance(s, Outbound))
    clients[2].deliver(update)  # clients do not receive "update"
    clients[2].deliver(to[2])
    steps = clients[2].poll()
    assert [(s.kind, s.source, s.port) for s in steps if isinstance(s, Rejected)] == [
        ("unexpected_port", "1", "update")]
    assert [s.peer for s in steps if isinstance(s, Outbound)] == [0]


def test_full_inbound_queue_refuses_without_raising(setup):
    compiled, bindings = setup
    node = install(9, compiled, ["round_client"], bindings,
                   NodeConfig(peers={"server": [0]}, max_inbound=2))
    assert node.deliver(b"a") and node.deliver(b"b")
    assert not node.deliver(b"c")
    kinds = [s.kind for s in node.poll() if isinstance(s, Rejected)]
    assert kinds == ["inbound_full", "malformed", "malformed"]


def test_install_checks_targets_and_bindings(setup):
    compiled, bindings = setup
    with pytest.raises(InstallError, match="available"):
        install(0, compiled, ["round_nowhere"], bindings)
    with pytest.raises(InstallError, match="needs a component"):
        install(0, compiled, ["round_client"], {"model": bindings["model"]})
    other = dict(bindings, data=weighted_mean(2, {"w": np.zeros(2, np.float32)}))
    with pytest.raises(PassportError, match="compiled with"):
        install(0, compiled, ["round_client"], other)


def test_gather_waits_for_every_sender_then_runs_once(fedavg):
    server, clients = fedavg_network(fedavg)
    server.start()
    for step in server.poll():
        if isinstance(step, Outbound):
            clients[step.peer].deliver(step.data)
    updates = {p: [s for s in n.poll() if isinstance(s, Outbound)] for p, n in clients.items()}
    server.deliver(updates[1][0].data)
    assert not [s for s in server.poll() if isinstance(s, AppOutput)]  # still waiting for 2
    server.deliver(updates[1][0].data)  # a duplicate does not count as the second sender
    assert [s.kind for s in server.poll() if isinstance(s, Rejected)] == ["duplicate"]
    server.deliver(updates[2][0].data)
    outputs = {s.name: s.value for s in server.poll() if isinstance(s, AppOutput)}
    assert int(outputs["participants"]) == 2


def test_gather_rejects_strangers_and_close_masks_absent_senders(fedavg):
    server, clients = fedavg_network(fedavg)
    stranger_server, strangers = fedavg_network(fedavg, clients=(7,))
    server.start()
    stranger_server.start()
    for step in server.poll():
        if isinstance(step, Outbound):
            clients[step.peer].deliver(step.data)
    for step in stranger_server.poll():
        if isinstance(step, Outbound):
            strangers[step.peer].deliver(step.data)
    server.deliver(next(s for s in strangers[7].poll() if isinstance(s, Outbound)).data)
    assert [s.kind for s in server.poll() if isinstance(s, Rejected)] == ["unexpected_sender"]
    server.deliver(next(s for s in clients[1].poll() if isinstance(s, Outbound)).data)
    server.poll()
    server.close("update")
    outputs = {s.name: s.value for s in server.poll() if isinstance(s, AppOutput)}
    assert int(outputs["participants"]) == 1
    with pytest.raises(InvalidArgument, match="gather port"):
        server.close("global")


def test_failing_peer_is_backed_off_marked_down_and_sends_time_out(setup):
    from bbjax.runtime.node import PeerDown, Timeout
    from bbjax.runtime.peer_health import BASE_BACKOFF_NS, DOWN_AFTER
    server, _ = round_network(setup)
    t = 1000.0
    server.report_send_failure(1, now=t)
    server.start()
    steps = server.poll(now=t)
    assert sorted(s.peer for s in steps if isinstance(s, Outbound)) == [2, 3]  # 1 backs off
    later = server.poll(now=t + 2 * BASE_BACKOFF_NS / 1e9)
    assert [s.peer for s in later if isinstance(s, Outbound)] == [1]          # released
    for i in range(DOWN_AFTER - 1):
        server.report_send_failure(1, now=t)
    assert [s for s in server.poll(now=t) if isinstance(s, PeerDown)] == [PeerDown(1)]
    server.start()
    server.poll(now=t)
    timed_out = server.poll(now=t + 1.0)  # the 100 ms deadline passed while peer 1 was down
    assert [s for s in timed_out if isinstance(s, Timeout)] == [Timeout(1, ("global",))]
    server.report_send_success(1)
    assert server.health.available(1, int(t * 1e9))


def test_sends_to_one_peer_in_one_run_share_an_envelope(net_model):
    from bbjax.runtime.envelope import decode

    class TwoPorts(Module):
        name = "two_ports"

        def body(self, g):
            params = g.slot("model").params()
            clients = g.peers("client")
            g.output("a", g.send("kernel", params["dense"]["kernel"], to=clients))
            g.output("b", g.send("bias", params["dense"]["bias"], to=clients))

    compiled = Compiler().bind("model", net_model).compile(TwoPorts())
    node = install(0, compiled, ["two_ports"], {"model": net_model},
                   NodeConfig(peers={"client": [5, 6]}))
    node.start()
    outbound = [s for s in node.poll() if isinstance(s, Outbound)]
    assert sorted(s.peer for s in outbound) == [5, 6]
    sites = {f.site for f in decode(outbound[0].data).fills}
    assert sites == {"kernel/0", "bias/0"}
    assert decode(outbound[0].data).deadline_ns == 100_000_000


def test_bootstrap_runs_once_at_install(net_model):
    from bbjax.compiler import verify_passport

    class Booted(Module):
        name = "booted"

        def body(self, g):
            params = g.slot("model").params()
            g.output("echo", g.send("p", params["dense"]["bias"], to=g.peers("client")))

        def bootstrap(self, g):
            g.output("hello", g.slot("model").params()["dense"]["bias"] + 1.0)

    compiled = Compiler().bind("model", net_model).compile(Booted())
    verify_passport(compiled.model)
    assert any(p.startswith("booted__bootstrap#") for p in compiled.partitions)
    node = install(0, compiled, ["booted"], {"model": net_model}, NodeConfig(peers={"client": [1]}))
    first = [s for s in node.poll() if isinstance(s, AppOutput)]
    assert [s.name for s in first] == ["hello"]
    assert node.poll() == []  # only once
    client = install(1, compiled, ["booted_client"], {"model": net_model})
    assert client.poll() == []  # no bootstrap for the client class


def test_wrong_version_and_oversized_envelopes_are_rejected(setup):
    import struct

    from bbjax.runtime.envelope import Limits
    compiled, bindings = setup
    server, clients = round_network(setup)
    server.start()
    valid = next(s for s in server.poll() if isinstance(s, Outbound))
    client = clients[valid.peer]
    wrong_version = valid.data[:4] + struct.pack("<H", 99) + valid.data[6:]
    client.deliver(wrong_version)
    small = install(valid.peer, compiled, ["round_client"], bindings,
                    NodeConfig(peers={"server": [0]}, limits=Limits(max_envelope_bytes=64)))
    small.deliver(valid.data)
    rejected = [s for s in client.poll() + small.poll() if isinstance(s, Rejected)]
    assert [s.kind for s in rejected] == ["wrong_version", "oversized"]
    assert "version" in rejected[0].detail.lower()
    assert "64" in rejected[1].detail


def test_a_partition_claiming_another_component_for_a_slot_is_refused(setup):
    compiled, bindings = setup
    model = ann_copy(compiled.model)
    for prop in model.metadata_props:  # the client partition claims another model component
        if prop.key.startswith("ai.bytesandbrains.binding.round_client") and \
                prop.key.endswith(".model"):
            prop.value = "model|another_model"
    with pytest.raises(PassportError, match="altered after compilation"):
        install(0, type(compiled)(model), ["round", "round_client"], bindings)


def test_type_mismatched_fill_is_rejected(setup):
    from bbjax.runtime.envelope import Envelope, Fill, encode
    from bbjax.runtime.tensor_codec import encode_tensor, type_hash
    _, clients = round_network(setup)
    arrays = [np.zeros((3,), np.float64), np.zeros((4, 3), np.float32)]  # wrong dtype first
    fills = tuple(Fill(f"global/{i}", type_hash(a.dtype, a.shape), encode_tensor(a))
                  for i, a in enumerate(arrays))
    clients[1].deliver(encode(Envelope("0", fills)))
    assert [s.kind for s in clients[1].poll() if isinstance(s, Rejected)] == ["type_mismatch"]
