"""``bbjax node serve`` under faults: a round whose second client never comes up ends at
``--round-timeout`` with the first client's update (the train loss of the same round run
in process), and a receiver killed in the middle of a chunked transfer admits the whole
transfer resent after its restart, then refuses it as a replay."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import httpx
import numpy as np

from bbjax.deploy.node.frames import encode_frames
from bbjax.deploy.node.identity import Identity, load_key_file
from bbjax.deploy.node.peers import load_peers
from bbjax.deploy.node.serve import MAX_FRAME_BYTES
from tests.deploy.test_node_serve import _serve, deployment  # noqa: F401 (a fixture)

ROUND_TIMEOUT_S = 8.0  # client 1 answers in 2-4 s (the first polls compile)


def in_process_round(work: Path) -> dict[str, np.ndarray]:
    """The outputs of one round of the deployment in ``work`` run as sans-IO nodes: the
    server and client 1 only, the gather closed with what arrived."""
    import bbjax
    from bbjax.compiler import load
    from bbjax.deploy.node.serve import resolve_targets
    from bbjax.runtime import AppOutput, NodeConfig, Outbound
    from examples.deploy_fedavg.app import components

    compiled = load(work / "artifact.onnx")
    classes = load_peers(work / "peers.toml").classes()
    server, client = (bbjax.install(peer, compiled, resolve_targets(compiled, targets),
                                    components(peer), NodeConfig(peers=classes))
                      for peer, targets in ((0, ["server", "fedavg"]), (1, ["client"])))
    server.start()
    for node, receiver, peer in ((server, client, 1), (client, server, 0)):
        for step in node.poll():
            if isinstance(step, Outbound) and step.peer == peer:
                receiver.deliver(step.data)
    assert not server.poll()  # client 1's update is in; the gather waits for client 2
    for port in server.ctx.gather_ports:
        server.close(port)
    return {s.name: np.asarray(s.value) for s in server.poll() if isinstance(s, AppOutput)}


def test_a_round_ends_at_the_round_timeout_with_the_client_that_answered(deployment,
                                                                        processes):
    work, outputs = deployment, deployment / "outputs.jsonl"
    peers = load_peers(work / "peers.toml")
    client = _serve(processes, work, 1)
    client.wait_http(f"{peers.by_id(1).address}/health")
    server = _serve(processes, work, 0, "--rounds", "1", "--round-timeout",
                    str(ROUND_TIMEOUT_S), "--outputs", str(outputs))
    health = f"{peers.by_id(0).address}/health"
    server.wait_http(health)
    metrics = f"{peers.by_id(0).address}/metrics"
    deadline = time.monotonic() + 60
    while httpx.get(metrics).json()["admitted"] < 1:  # client 1's update
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.1)
    expected = in_process_round(work)["train_loss"]  # while the round waits for client 2
    while httpx.get(health).json()["rounds_done"] < 1:
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.1)
    [line] = outputs.read_text().splitlines()
    got = json.loads(line)["outputs"]
    assert got["participants"] == 1 and got["rejected"] == 0, got
    assert math.isfinite(got["train_loss"]) and got["train_loss"] > 0
    np.testing.assert_allclose(got["train_loss"], expected, rtol=1e-6)
    assert httpx.get(metrics).json()["outbox"] == 1  # the model for client 2, kept
    assert [server.stop(), client.stop()] == [0, 0]


def test_a_receiver_killed_mid_transfer_admits_it_resent_whole_then_refuses_replays(
        deployment, processes):
    work = deployment
    url = load_peers(work / "peers.toml").by_id(0).address
    frames = encode_frames(Identity(1, load_key_file(work / "key1.toml")), 0, 1,
                           os.urandom(9 << 20), max_frame_bytes=MAX_FRAME_BYTES,
                           timestamp_ns=time.time_ns())
    assert len(frames) == 3

    def post(chunks: list[bytes]) -> list[int]:
        return [httpx.post(f"{url}/envelope", content=c, timeout=30).status_code
                for c in chunks]

    first = _serve(processes, work, 0, "--rounds", "0")
    first.wait_http(f"{url}/health")
    assert post(frames[:2]) == [200, 200]
    first.kill9()  # the transfer's last chunk never arrived
    second = _serve(processes, work, 0, "--rounds", "0")  # on the same --state
    second.wait_http(f"{url}/health")
    assert post(frames) == [200, 200, 200]
    metrics = httpx.get(f"{url}/metrics").json()
    assert (metrics["admitted"], metrics["refused"]) == (3, {})
    assert post(frames) == [409, 409, 409]
    metrics = httpx.get(f"{url}/metrics").json()
    assert (metrics["admitted"], metrics["refused"]) == (3, {"replay": 3})
    assert second.proc.poll() is None
    assert httpx.get(f"{url}/health").json() == {"peer": 0, "rounds_done": 0}
    assert second.stop() == 0
