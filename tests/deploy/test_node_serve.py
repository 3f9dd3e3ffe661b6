"""``bbjax node serve``: FedAvg nodes as processes exchanging signed frames, and a node
refusing hostile frames without losing its round."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sqlite3
import sys

import httpx
import nacl.signing
import pytest

from bbjax.deploy.node import serve_cli
from bbjax.deploy.node.blobs import EXTERNAL_BYTES
from bbjax.deploy.node.components import load_components
from bbjax.deploy.node.frames import encode_frames
from bbjax.deploy.node.identity import Identity, load_key_file
from bbjax.deploy.node.peers import load_peers
from bbjax.deploy.node.store import NodeStore
from bbjax.errors import ConfigError, StoreError

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "deploy_fedavg"


@pytest.fixture
def deployment(tmp_path, monkeypatch):
    """A FedAvg artifact, keys and peers for a server and 2 clients."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from build import build

    build(tmp_path, clients=2, local_steps=2)
    yield tmp_path
    sys.modules.pop("build", None), sys.modules.pop("app", None)


def _serve(processes, work: pathlib.Path, peer: int, *extra: str):
    targets = ["--target", "server", "--target", "fedavg"] if peer == 0 else \
        ["--target", "client"]
    return processes("node", "serve", str(work / "artifact.onnx"), *targets,
                     "--peer", str(peer), "--peers", str(work / "peers.toml"),
                     "--key", str(work / f"key{peer}.toml"),
                     "--components", "examples.deploy_fedavg.app:components",
                     "--state", str(work / f"peer{peer}.db"), *extra, name=f"peer{peer}")


def _frame(signer: nacl.signing.SigningKey, sender: int, seq: int, data: bytes) -> bytes:
    [frame] = encode_frames(Identity(sender, signer), 1, seq, data,
                            max_frame_bytes=1 << 20, timestamp_ns=1)
    return frame


def test_nodes_run_rounds_and_refuse_hostile_frames(deployment, processes):
    work = deployment
    peers = load_peers(work / "peers.toml")
    url = peers.by_id(1).address
    client = _serve(processes, work, 1)
    others = [_serve(processes, work, 2)]
    client.wait_http(f"{url}/health")
    key2 = load_key_file(work / "key2.toml")
    hostile = [(b"garbage", 400),
               (_frame(nacl.signing.SigningKey.generate(), 0, 1, b"x"), 403),  # unknown key
               (_frame(key2, 0, 1, b"x"), 403),                                # impersonation
               (_frame(key2, 2, 7, b"x"), 200),                                # genuine...
               (_frame(key2, 2, 7, b"x"), 409)]                                # ...replayed
    for body, status in hostile:
        assert httpx.post(f"{url}/envelope", content=body).status_code == status
    outputs = work / "outputs.jsonl"
    server = _serve(processes, work, 0, "--rounds", "2", "--round-timeout", "60",
                    "--outputs", str(outputs), "--exit-after-rounds")
    assert server.proc.wait(240) == 0, server.output()
    rounds = [json.loads(line) for line in outputs.read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["outputs"]["participants"] == 2 for r in rounds)
    metrics = httpx.get(f"{url}/metrics").json()
    assert metrics["refused"] == {"malformed": 1, "unknown_key": 1, "impersonation": 1,
                                  "replay": 1}
    assert metrics["admitted"] == 1 + 2  # the genuine frame, then one model per round
    assert httpx.get(f"{url}/health").json()["peer"] == 1
    assert (work / "peer0.db.final.npz").is_file()
    assert [client.stop(), *(p.stop() for p in others)] == [0, 0]  # SIGTERM: clean exit


def test_the_store_commits_state_outbox_inbox_gate_and_meta_together(tmp_path):
    store = NodeStore(tmp_path / "node.db")
    assert (store.state(), store.outbox(), store.last_seq()) == (None, [], {})
    assert store.meta() == {"rounds_started": 0, "rounds_done": 0, "next_seq": 1}
    store.commit(b"s1", [(1, 2, b"f1"), (2, 3, b"f2")], (), {2: 5}, {"next_seq": 3})
    first = store.log_inbound(b"e1", {2: 6})
    second = store.log_inbound(b"e2", {2: 7, 3: 1})
    store.commit(b"s2", (), [1], {2: 7, 3: 1}, {"next_seq": 3}, [first])
    with pytest.raises(StoreError):  # seq 2 is taken: nothing of this commit is kept
        store.commit(b"s3", [(2, 4, b"dup")], (), {2: 9}, {"rounds_done": 1}, [second])
    store.close()
    reopened = NodeStore(tmp_path / "node.db")
    assert reopened.state() == b"s2"
    assert reopened.outbox() == [(2, 3, b"f2")]
    assert reopened.inbox() == [(second, b"e2")]  # logged, not yet taken into a state
    assert reopened.last_seq() == {2: 7, 3: 1}
    assert reopened.meta() == {"rounds_started": 0, "rounds_done": 0, "next_seq": 3}
    with sqlite3.connect(tmp_path / "node.db") as db:  # pages for big blobs
        assert db.execute("PRAGMA page_size").fetchone() == (65536,)


@pytest.mark.parametrize("spec", ["no_colon", "bbjax_no_such_module:f", "json:no_such_function",
                                  "json:dumps"])
def test_components_that_do_not_resolve_are_config_errors(spec):
    with pytest.raises(ConfigError):
        load_components(spec, 1)


@pytest.mark.parametrize("flag, value", [("--max-frame-bytes", "1023"),
                                         ("--max-frame-bytes", "4MiB"),
                                         ("--max-envelope-bytes", "0"),
                                         ("--max-envelope-bytes", str(2**32))])
def test_size_flags_out_of_range_are_usage_errors(flag, value, capsys):
    parser = argparse.ArgumentParser(prog="bbjax node serve")
    serve_cli.add_arguments(parser)
    required = ["artifact.onnx", "--target", "client", "--peer", "1", "--peers", "p.toml",
                "--key", "k.toml", "--components", "m:f", "--state", "s.db"]
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args([*required, flag, value])
    assert exit_.value.code == 2
    assert f"argument {flag}: expected an integer in [" in capsys.readouterr().err


def test_large_values_live_in_files_that_only_committed_rows_keep(tmp_path):
    big = [os.urandom(EXTERNAL_BYTES + i) for i in range(4)]
    store = NodeStore(tmp_path / "node.db")
    blobs = tmp_path / "node.db.blobs"
    store.commit(big[0], [(1, 2, big[1]), (2, 2, b"small")])
    first = store.log_inbound(big[2], {2: 1})
    assert len(list(blobs.iterdir())) == 3  # state, frame 1, the envelope; "small" inline
    with pytest.raises(StoreError):  # seq 2 is taken: nothing of it is kept, files included
        store.commit(big[3], [(2, 2, big[3])], [1], None, None, [first])
    assert len(list(blobs.iterdir())) == 3
    store.commit(big[3], (), [1], None, None, [first])  # the old state, frame 1, the envelope
    assert [p.read_bytes() for p in blobs.iterdir()] == [big[3]]  # go
    (blobs / "0123.tmp").write_bytes(b"an unfinished write")  # as a crash would leave
    (blobs / "feed").write_bytes(b"written, never committed")
    store.close()
    reopened = NodeStore(tmp_path / "node.db")
    assert (reopened.state(), reopened.outbox(), reopened.inbox()) == (big[3], [(2, 2, b"small")],
                                                                       [])
    assert [p.read_bytes() for p in blobs.iterdir()] == [big[3]]
