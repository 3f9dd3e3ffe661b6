"""Identities, key files, the peer list and signed frames (bbjax.deploy.node)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbjax.deploy.node.frames import (CHUNK, CHUNK_OVERHEAD, WHOLE, WHOLE_OVERHEAD,
                                      decode_frame, encode_frames)
from bbjax.deploy.node.identity import Identity, load_key_file, new_key_file
from bbjax.deploy.node.peers import load_peers
from bbjax.errors import ConfigError, FrameError, InvalidArgument
from tests.deploy.processes import env
from tests.forced_devices import ROOT

KEY = nacl.signing.SigningKey(bytes(range(32)))
ME = Identity(3, KEY)


def test_key_file_mode_no_overwrite_and_load(tmp_path):
    path = tmp_path / "key.toml"
    public = new_key_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = load_key_file(path)
    assert bytes(key.verify_key) == public
    text = path.read_text()
    assert text == f'secret = "{bytes(key).hex()}"\n'
    with pytest.raises(ConfigError, match="never overwritten"):
        new_key_file(path)
    assert path.read_text() == text
    identity = Identity(7, key)
    assert identity.public == public and bytes(key).hex() not in repr(identity)
    assert nacl.signing.VerifyKey(public).verify(b"m", identity.sign(b"m")) == b"m"


@pytest.mark.parametrize("text", ['secret = "abc"\n', 'secret = 5\n', "secret = \n",
                                  f'secret = "{"g" * 64}"\n',
                                  f'secret = "{"a" * 64}"\nother = 1\n'])
def test_malformed_key_files_are_refused(tmp_path, text):
    path = tmp_path / "key.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_key_file(path)


def test_keys_cli_prints_the_public_key_never_the_secret(tmp_path):
    out = tmp_path / "node.toml"
    done = subprocess.run([sys.executable, "-m", "bbjax", "keys", "new", "--out", str(out)],
                          capture_output=True, text=True, env=env(), cwd=str(ROOT), timeout=120)
    assert done.returncode == 0, done.stderr
    key = load_key_file(out)
    assert bytes(key.verify_key).hex() in done.stdout
    assert bytes(key).hex() not in done.stdout + done.stderr



def _peer(i, cls="client", address=None, key=None):
    key = key or bytes(nacl.signing.SigningKey(bytes([i + 1]) * 32).verify_key).hex()
    address = address or f"http://127.0.0.1:{8000 + i}"
    return f'[[peer]]\nid = {i}\nclass = "{cls}"\naddress = "{address}"\npublic_key = "{key}"\n'


def test_peer_list_lookups(tmp_path):
    path = tmp_path / "peers.toml"
    path.write_text(_peer(2) + _peer(0, "server", "https://localhost:9000/") + _peer(1))
    peers = load_peers(path)
    assert peers.classes() == {"server": [0], "client": [1, 2]}
    entry = peers.by_id(0)
    assert (entry.id, entry.peer_class, entry.address) == (0, "server", "https://localhost:9000")
    assert peers.id_of_key(entry.public_key) == 0 and peers.id_of_key(b"\0" * 32) is None
    with pytest.raises(ConfigError):
        peers.by_id(5)


@pytest.mark.parametrize("text, field", [
    (_peer(0) + _peer(0, key="ab" * 32), "peer[1].id"),
    (_peer(0) + _peer(1, key=bytes(nacl.signing.SigningKey(b"\1" * 32).verify_key).hex()),
     "peer[1].public_key"),
    (_peer(0).replace("id = 0", "id = -1"), "peer[0].id"),
    (_peer(0).replace("id = 0", "id = 2147483648"), "peer[0].id"),
    (_peer(0).replace("id = 0", "id = true"), "peer[0].id"),
    (_peer(0, key="ab" * 31), "peer[0].public_key"),
    (_peer(0, address="ftp://h:1"), "peer[0].address"),
    (_peer(0, address="http://h"), "peer[0].address"),
    (_peer(0, address="http://h:0"), "peer[0].address"),
    (_peer(0, address="http://h:1/path"), "peer[0].address"),
    (_peer(0, cls=""), "peer[0].class"),
    (_peer(0) + "colour = 1\n", "peer[0]"),
    ("x = 1\n", "peer"),
])
def test_bad_peer_lists_name_the_entry(tmp_path, text, field):
    path = tmp_path / "peers.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_peers(path)
    assert info.value.field == field


def _reassemble(frames, max_frame_bytes):
    decoded = [decode_frame(f, max_frame_bytes=max_frame_bytes) for f in frames]
    assert all(d.verify() and d.signer == ME.public and d.sender == 3 for d in decoded)
    return decoded, b"".join(d.payload for d in decoded)


def test_whole_frame_layout():
    (frame,) = encode_frames(ME, 5, 9, b"hello", max_frame_bytes=1000, timestamp_ns=42)
    assert len(frame) == WHOLE_OVERHEAD + 5 and frame[:4] == b"BBSF"
    d = decode_frame(frame, max_frame_bytes=1000)
    assert (d.version, d.kind, d.sender, d.receiver, d.seq, d.timestamp_ns, d.transfer,
            d.index, d.count, d.payload) == (1, WHOLE, 3, 5, 9, 42, None, 0, 1, b"hello")
    assert d.signed_part == frame[:-64] and d.signature == frame[-64:] and d.verify()


def test_chunked_frames_share_a_transfer():
    envelope = os.urandom(1000)
    frames = encode_frames(ME, 1, 50, envelope, max_frame_bytes=CHUNK_OVERHEAD + 300,
                           timestamp_ns=0)
    decoded, joined = _reassemble(frames, CHUNK_OVERHEAD + 300)
    assert joined == envelope and all(len(f) <= CHUNK_OVERHEAD + 300 for f in frames)
    assert [(d.kind, d.seq, d.transfer, d.index, d.count) for d in decoded] == [
        (CHUNK, 50 + i, 50, i, 4) for i in range(4)]


def test_encoder_refuses_bad_arguments():
    with pytest.raises(InvalidArgument):
        encode_frames(ME, 1, 0, b"x", max_frame_bytes=1000, timestamp_ns=0)
    with pytest.raises(InvalidArgument):
        encode_frames(ME, 1, 1, b"x", max_frame_bytes=CHUNK_OVERHEAD, timestamp_ns=0)
    with pytest.raises(InvalidArgument):
        encode_frames(ME, 2**31, 1, b"x", max_frame_bytes=1000, timestamp_ns=0)
    with pytest.raises(InvalidArgument):
        encode_frames(ME, 1, 2**64 - 1, b"x" * 1000, max_frame_bytes=CHUNK_OVERHEAD + 10,
                      timestamp_ns=0)


@pytest.mark.parametrize("mutate, field", [
    (lambda f: f[:10], "header"),
    (lambda f: b"XXXX" + f[4:], "magic"),
    (lambda f: f[:4] + b"\2" + f[5:], "version"),
    (lambda f: f[:5] + b"\7" + f[6:], "kind"),
    (lambda f: f[:6] + b"\xff" + f[7:], "sender"),
    (lambda f: f + b"\0", "payload.length"),
    (lambda f: f[:-1], "payload.length"),
    (lambda f: f[:5] + b"\1" + f[6:], "chunk"),
])
def test_decode_errors_name_the_field(mutate, field):
    (frame,) = encode_frames(ME, 5, 9, b"hello", max_frame_bytes=1000, timestamp_ns=42)
    with pytest.raises(FrameError, match=f"^{field}[:.]"):
        decode_frame(mutate(frame), max_frame_bytes=1000)


def test_decode_refuses_frames_over_the_cap():
    (frame,) = encode_frames(ME, 5, 9, b"hello", max_frame_bytes=1000, timestamp_ns=42)
    with pytest.raises(FrameError, match="^frame: .* cap"):
        decode_frame(frame, max_frame_bytes=len(frame) - 1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_decode_of_arbitrary_bytes_raises_only_frame_errors(data):
    for prefix in (b"", b"BBSF\1\0", b"BBSF\1\1"):
        try:
            frame = decode_frame(prefix + data, max_frame_bytes=1000)
        except FrameError:
            continue
        assert not frame.verify()


_VALID = encode_frames(ME, 1, 7, bytes(range(256)) * 2, max_frame_bytes=CHUNK_OVERHEAD + 200,
                       timestamp_ns=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_VALID), st.data())
def test_mutated_frames_raise_only_frame_errors_or_fail_verification(frame, data):
    at = data.draw(st.integers(0, len(frame) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != frame[at]))
    cut = data.draw(st.integers(0, len(frame) - 1))
    for mutated in (frame[:at] + bytes([byte]) + frame[at + 1:], frame[:cut],
                    frame + frame[:cut + 1]):
        try:
            decoded = decode_frame(mutated, max_frame_bytes=10_000)
        except FrameError:
            continue
        assert not decoded.verify()


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000), st.integers(CHUNK_OVERHEAD + 1, CHUNK_OVERHEAD + 1500),
       st.integers(1, 2**63), st.integers(0, 2**31 - 1))
def test_encode_decode_round_trip(envelope, max_frame_bytes, seq, receiver):
    frames = encode_frames(ME, receiver, seq, envelope, max_frame_bytes=max_frame_bytes,
                           timestamp_ns=123)
    decoded, joined = _reassemble(frames, max_frame_bytes)
    assert joined == envelope
    assert [d.seq for d in decoded] == list(range(seq, seq + len(frames)))
    assert all(d.receiver == receiver and len(f) <= max_frame_bytes
               for d, f in zip(decoded, frames))
    assert (len(frames) == 1) == (WHOLE_OVERHEAD + len(envelope) <= max_frame_bytes)
