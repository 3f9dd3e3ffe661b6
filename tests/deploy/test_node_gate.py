"""The admission gate: every refusal reason from a real crafted frame, reassembly, counts,
and that a refused frame changes nothing (bbjax.deploy.node.gate)."""

from __future__ import annotations

import os
import time

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.deploy.node.frames import CHUNK_OVERHEAD, encode_frames
from bbjax.deploy.node.gate import Admitted, Gate, Refused
from bbjax.deploy.node.identity import Identity
from bbjax.deploy.node.peers import PeerEntry, Peers

KEYS = {i: nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(3)}
PEERS = Peers([PeerEntry(i, "server" if i == 0 else "client", f"http://127.0.0.1:{8000 + i}",
                         bytes(k.verify_key)) for i, k in KEYS.items()])
CLIENT = Identity(1, KEYS[1])
FRAME = CHUNK_OVERHEAD + 100


def gate(**kw) -> Gate:
    kw.setdefault("max_frame_bytes", FRAME)
    kw.setdefault("max_transfer_bytes", 10_000)
    return Gate(0, PEERS, **kw)


def frames(envelope, seq=1, identity=CLIENT, receiver=0):
    return encode_frames(identity, receiver, seq, envelope, max_frame_bytes=FRAME,
                         timestamp_ns=0)


def state(g):
    return g.last_seq, g.open_transfers()


def test_whole_and_chunked_envelopes_are_admitted():
    g = gate()
    assert g.admit(frames(b"small")[0], 0) == Admitted(1, b"small")
    envelope = os.urandom(350)
    chunks = frames(envelope, seq=2)
    assert len(chunks) == 4
    outcomes = [g.admit(f, 0) for f in chunks]
    assert outcomes == [Admitted(1, None)] * 3 + [Admitted(1, envelope)]
    assert g.last_seq == {1: 5} and g.open_transfers() == {}
    assert g.counts == {"admitted": 5}


def _refused(g, data, reason, sender):
    before = state(g)
    outcome = g.admit(data, 0)
    assert isinstance(outcome, Refused) and (outcome.reason, outcome.sender) == (reason, sender)
    assert state(g) == before
    return outcome


def test_refusals_of_crafted_frames_change_nothing():
    g = gate()
    envelope = os.urandom(350)
    chunks = frames(envelope, seq=10)
    assert g.admit(chunks[0], 0) == Admitted(1, None)
    stranger = Identity(1, nacl.signing.SigningKey(b"\x99" * 32))
    impostor = Identity(1, KEYS[2])           # peer 2's key claiming to be peer 1
    flipped = bytearray(frames(b"x", seq=20)[0])
    flipped[-1] ^= 1
    _refused(g, b"not a frame", "malformed", None)
    _refused(g, frames(b"x", seq=20, receiver=2)[0], "wrong_receiver", 1)
    _refused(g, frames(b"x", seq=20, identity=stranger)[0], "unknown_key", 1)
    _refused(g, frames(b"x", seq=20, identity=impostor)[0], "impersonation", 1)
    _refused(g, bytes(flipped), "bad_signature", 1)
    _refused(g, chunks[0], "replay", 1)                       # a replay of an admitted frame
    _refused(g, frames(b"x", seq=5)[0], "replay", 1)          # an older seq
    _refused(g, chunks[2], "transfer_inconsistent", 1)        # out of order
    recount = frames(os.urandom(450), seq=10)                 # chunk 1 of a 5-chunk transfer 10
    _refused(g, recount[1], "transfer_inconsistent", 1)
    _refused(g, frames(os.urandom(350), seq=30)[1], "transfer_unknown", 1)  # no start
    assert g.counts == {"admitted": 1, "malformed": 1, "wrong_receiver": 1, "unknown_key": 1,
                        "impersonation": 1, "bad_signature": 1, "replay": 2,
                        "transfer_inconsistent": 2, "transfer_unknown": 1}
    for f in chunks[1:3]:
        assert g.admit(f, 0) == Admitted(1, None)             # the transfer carries on
    assert g.admit(chunks[3], 0) == Admitted(1, envelope)


def test_transfer_bounds():
    g = gate(max_transfers_per_peer=2, max_transfer_bytes=400)
    firsts = [frames(os.urandom(350), seq=s)[0] for s in (1, 10, 20)]
    assert g.admit(firsts[0], 0) == Admitted(1, None)
    assert g.admit(firsts[1], 0) == Admitted(1, None)
    _refused(g, firsts[2], "transfer_full", 1)
    _refused(g, frames(os.urandom(450), seq=30)[0], "transfer_full", 1)  # over 400 bytes
    assert g.admit(frames(os.urandom(350), seq=40, identity=Identity(2, KEYS[2]))[0],
                   0) == Admitted(2, None)                   # other senders are unaffected
    late = frames(os.urandom(350), seq=50)[0]
    assert g.admit(late, 61 * 10**9) == Admitted(1, None)     # the stale transfers expired
    assert g.open_transfers() == {1: 1}


def test_last_seq_resumes_and_is_per_sender():
    g = gate(last_seq={1: 7})
    _refused(g, frames(b"x", seq=7)[0], "replay", 1)
    assert g.admit(frames(b"x", seq=8)[0], 0) == Admitted(1, b"x")
    assert g.admit(frames(b"y", seq=1, identity=Identity(2, KEYS[2]))[0], 0) == Admitted(2, b"y")
    assert g.last_seq == {1: 8, 2: 1}


def test_a_gate_restarted_mid_transfer_admits_the_resent_transfer():
    g = gate()
    assert g.admit(frames(b"x", seq=3)[0], 0) == Admitted(1, b"x")
    envelope = os.urandom(350)
    chunks = frames(envelope, seq=10)
    assert [g.admit(f, 0) for f in chunks[:2]] == [Admitted(1, None)] * 2
    _refused(g, chunks[1], "replay", 1)
    assert g.last_seq == {1: 9}
    restarted = gate(last_seq=g.last_seq)                    # its buffers are lost
    _refused(restarted, frames(b"x", seq=3)[0], "replay", 1)
    assert [restarted.admit(f, 0) for f in chunks][-1] == Admitted(1, envelope)
    assert restarted.last_seq == {1: 13}


def _big_round_trip(size):
    envelope = os.urandom(size)
    chunk = 4 * 2**20
    g = Gate(0, PEERS, max_frame_bytes=chunk, max_transfer_bytes=size)
    sent = encode_frames(CLIENT, 0, 1, envelope, max_frame_bytes=chunk, timestamp_ns=0)
    outcomes = [g.admit(f, 0) for f in sent]
    assert all(o == Admitted(1, None) for o in outcomes[:-1])
    assert outcomes[-1].envelope == envelope and g.counts == {"admitted": len(sent)}


def test_5mb_envelope_round_trip():
    _big_round_trip(5 * 10**6)


@pytest.mark.slow
def test_100mb_envelope_round_trip():
    started = time.perf_counter()
    _big_round_trip(100 * 10**6)
    print(f"100 MB in {time.perf_counter() - started:.1f} s")


_SENT = frames(bytes(range(256)) * 2, seq=100) + frames(b"whole", seq=200)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_SENT), st.integers(0, 10**6), st.integers(0, 255), st.data())
def test_mutated_frames_are_refused_and_change_nothing(frame, at, byte, data):
    g = gate()
    g.admit(_SENT[0], 0)
    before = state(g)
    at %= len(frame)
    byte = byte if byte != frame[at] else (byte + 1) % 256
    cut = data.draw(st.integers(0, len(frame) - 1))
    for mutated in (frame[:at] + bytes([byte]) + frame[at + 1:], frame[:cut], 5, "text"):
        outcome = g.admit(mutated, 0)
        assert isinstance(outcome, Refused), outcome
        assert state(g) == before
