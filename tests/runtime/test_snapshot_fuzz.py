"""Corrupted snapshots: whatever the bytes, ``Node.restore`` gives a SnapshotError or a
node, and a node only when it is the original (bit flips, truncations) or one that
snapshots and restores to itself and polls without raising (members rewritten whole).
Whatever the state bytes, ``state_from_bytes`` gives a SnapshotError or a state whose bytes
they are exactly, and which polls without raising."""

from __future__ import annotations

import io
import json
import struct
import zipfile

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bbjax.errors import SnapshotError
from bbjax.runtime.node import Node
from bbjax.runtime.node_state import state_from_bytes, state_to_bytes
from tests.runtime.state_bytes import reseal
from tests.runtime.strategies import members, mutations, rezip

FLIPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REWRITES = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
WHICH = st.sampled_from(["gathered", "pending"])


def restore_or_none(data: bytes, bindings: dict, record: bool = True) -> Node | None:
    """The restored node, or None for a SnapshotError; ``record`` counts which (as a
    hypothesis event)."""
    try:
        node = Node.restore(data, bindings)
    except SnapshotError as error:
        if record:
            event(f"SnapshotError: {str(error).split(':')[0][:40]}")
        return None
    if record:
        event("restored")
    return node


@st.composite
def corruptions(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with 1-3 bit flips, then maybe truncated. Half the flips land in the
    archive's last 2 KiB (the small members, the central directory, the end record) or its
    first 1 KiB (the local header and meta.json), where the structure is."""
    out = bytearray(data)
    bits = len(out) * 8
    where = st.integers(0, bits - 1) | st.integers(max(bits - 2048 * 8, 0), bits - 1) \
        | st.integers(0, min(1024 * 8, bits) - 1)
    for bit in draw(st.lists(where, min_size=1, max_size=3)):
        out[bit // 8] ^= 1 << (bit % 8)
    if draw(st.booleans()):
        del out[draw(st.integers(0, len(out) - 1)):]
    return bytes(out)


@FLIPS
@given(st.data(), WHICH)
def test_bit_flips_and_truncations_are_a_snapshot_error_or_the_same_node(
        snapshots, bindings, data, which):
    original = snapshots[which]
    node = restore_or_none(data.draw(corruptions(original)), bindings)
    assert node is None or node.snapshot() == original


@FLIPS
@given(st.data(), WHICH)
def test_every_prefix_is_a_snapshot_error(snapshots, bindings, data, which):
    original = snapshots[which]
    assert restore_or_none(original[:data.draw(st.integers(0, len(original) - 1))],
                           bindings) is None


@st.composite
def rewritten(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with one member's bytes (or one meta.json value) changed and the archive
    rebuilt, so the corruption gets past the zip CRCs into the member's own decoder (and,
    half of the time, past the state's own CRC into its field decoder)."""
    contents = members(data)
    name = draw(st.sampled_from(sorted(contents)))
    raw = bytearray(contents[name])
    if name == "meta.json" and draw(st.booleans()):
        contents[name] = json.dumps(draw(_json_edit(json.loads(raw)))).encode()
    elif raw and draw(st.booleans()):
        at = draw(st.integers(0, len(raw) - 1))
        raw[at] ^= 1 << draw(st.integers(0, 7))
        contents[name] = bytes(raw)
    else:
        contents[name] = bytes(raw[:draw(st.integers(0, max(len(raw) - 1, 0)))])
    if name == "state" and draw(st.booleans()):
        contents[name] = reseal(contents[name])
    return rezip(contents)


_VALUES = st.none() | st.booleans() | st.integers(-(2**65), 2**65) \
    | st.sampled_from([0, 1, -1, 2**31, 2**63, 2**64, 10**9]) | st.text(max_size=8) \
    | st.lists(st.integers(-2, 5), max_size=3) | st.just({})


@st.composite
def _json_edit(draw: st.DrawFn, meta: dict) -> dict:
    """``meta`` with the value at one key path replaced, or that key removed."""
    target, key = meta, None
    while True:
        keys = sorted(target) if isinstance(target, dict) else list(range(len(target)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        if not isinstance(target[key], dict | list) or not target[key] or draw(st.booleans()):
            break
        target = target[key]
    if key is None:
        return meta
    if isinstance(target, dict) and draw(st.booleans()):
        del target[key]
    else:
        target[key] = draw(_VALUES)
    return meta


def _installation(node: Node) -> tuple:
    return (node.peer, [s.target for s in node.steps], node.config,
            node.compiled.model.SerializeToString())


@REWRITES
@given(st.data(), WHICH)
def test_rewritten_members_are_a_snapshot_error_or_a_consistent_node(
        gather_case, snapshots, bindings, data, which):
    node = restore_or_none(data.draw(rewritten(snapshots[which])), bindings)
    if node is None:
        return
    again = node.snapshot()
    assert Node.restore(again, bindings).snapshot() == again
    # whatever was restored, polling it does not raise; where only the state differs, poll
    # it on the already compiled node of the same installation
    if _installation(node) == _installation(gather_case.node):
        gather_case.node.state = node.state
        node = gather_case.node
    try:
        node.poll(now=0.0)
    finally:
        gather_case.reset()


def _structure(data: bytes) -> list[int]:
    """Offsets of the archive's bytes outside member data: local headers, the central
    directory and the end record."""
    inside = set()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            name_size, extra_size = struct.unpack_from("<HH", data, info.header_offset + 26)
            start = info.header_offset + 30 + name_size + extra_size
            inside.update(range(start, start + info.compress_size))
    return [i for i in range(len(data)) if i not in inside]


def test_a_bit_flip_in_every_structural_byte_is_a_snapshot_error_or_the_same_node(
        snapshots, bindings):
    original = snapshots["pending"]
    offsets = _structure(original)
    assert 200 < len(offsets) < len(original) // 10
    restored = 0
    for offset in offsets:
        flipped = bytearray(original)
        flipped[offset] ^= 1 << (offset % 8)
        node = restore_or_none(bytes(flipped), bindings, record=False)
        assert node is None or node.snapshot() == original, offset
        restored += node is not None
    assert 0 < restored < len(offsets) // 2


@FLIPS
@given(st.data(), WHICH)
def test_mutated_state_bytes_are_a_snapshot_error_or_exactly_a_state_that_polls(
        gather_case, snapshots, data, which):
    original = members(snapshots[which])["state"]
    edited = data.draw(mutations(original, resealed=False))
    if data.draw(st.booleans()):
        edited = reseal(edited)
    node = gather_case.node
    try:
        state = state_from_bytes(edited, node.ctx)
    except SnapshotError as error:
        event(f"SnapshotError: {str(error).split(':')[0][:40]}")
        return
    event("read")
    assert state_to_bytes(state) == edited  # canonical: no other bytes give this state
    node.state = state
    try:
        node.poll(now=0.0)
    finally:
        gather_case.reset()


@FLIPS
@given(st.binary(max_size=120), st.booleans())
def test_any_bytes_are_a_snapshot_error_or_exactly_a_state(gather_case, raw, framed):
    data = reseal(b"BBNS\x01\x00" + raw + bytes(4)) if framed else raw
    try:
        state = state_from_bytes(data, gather_case.node.ctx)
    except SnapshotError:
        return
    assert state_to_bytes(state) == data
