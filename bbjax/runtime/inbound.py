"""What a Node accepts: an envelope's sender and each port's arrays, or the Rejected event
saying why not (the rules and kinds tabled in ``docs/runtime.md``). Pure functions of the
node's :class:`~bbjax.runtime.node_state.NodeContext` and its pending queues."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sized

import numpy as np

from bbjax.errors import (
    EnvelopeError,
    OversizedEnvelope,
    TensorDecodeError,
    TruncatedEnvelope,
    UnsupportedVersion,
)
from bbjax.runtime.envelope import Envelope, Fill, Limits, decode
from bbjax.runtime.events import Rejected, RejectKind
from bbjax.runtime.node_state import (
    MAX_PEER_ID,
    NodeContext,
    PortSpec,
    parse_decimal,
    parse_peer_id,
)
from bbjax.runtime.tensor_codec import decode_tensor, tensor_type_name

_DECODE_KINDS: dict[type[EnvelopeError], RejectKind] = {
    TruncatedEnvelope: "truncated", OversizedEnvelope: "oversized",
    UnsupportedVersion: "wrong_version",
}
Messages = dict[str, tuple[np.ndarray, ...]]


def digest(data: bytes) -> int:
    """The dedup digest of envelope bytes (64-bit BLAKE2b)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def read_envelope(ctx: NodeContext, data: bytes,
                  pending: Mapping[str, Sized]) -> tuple[int, Messages] | Rejected:
    """The sender and each port's arrays of envelope bytes ``data`` (its digest not checked
    here), or why they are refused; ``pending`` holds each port's queued messages."""
    try:
        envelope = decode(data, limits=ctx.config.limits)
    except EnvelopeError as exc:
        return Rejected(_DECODE_KINDS.get(type(exc), "malformed"), str(exc))
    return check_envelope(ctx, envelope, pending)


def check_envelope(ctx: NodeContext, envelope: Envelope,
                   pending: Mapping[str, Sized]) -> tuple[int, Messages] | Rejected:
    """The sender and each port's arrays, or why the envelope is refused (the first
    failing check, cheapest first)."""
    source = envelope.source

    def refuse(kind: RejectKind, detail: str, port: str | None = None) -> Rejected:
        return Rejected(kind, detail, source, port)

    sender = parse_peer_id(source)
    if sender is None:
        return refuse("malformed", f"source {source!r} is not a peer id (a decimal "
                      f"integer in [0, {MAX_PEER_ID}], no sign or leading zero)")
    if sender == ctx.peer:
        return refuse("from_self", f"the envelope claims to come from this node "
                      f"({sender}); a node's messages to itself never cross the wire")
    fills: dict[str, dict[int, Fill]] = {}
    for fill in envelope.fills:
        port, slash, index = fill.site.rpartition("/")
        if not slash or port not in ctx.port_specs:
            return refuse("unexpected_port", f"no partition on this node receives site "
                          f"{fill.site!r}", port if slash else None)
        count = len(ctx.port_specs[port].dtypes)
        i = parse_decimal(index, 5)
        if i is None:
            return refuse("malformed", f"site {fill.site!r}: {index!r} is not an array "
                          "index", port)
        if i >= count:
            return refuse("count_mismatch", f"port {port!r} carries {count} arrays, got "
                          f"a fill for array {i}", port)
        if i in fills.setdefault(port, {}):
            return refuse("duplicate_fill", f"site {fill.site!r} is filled twice", port)
        fills[port][i] = fill
    for port, by_index in fills.items():
        spec = ctx.port_specs[port]
        if len(by_index) != len(spec.dtypes):
            return refuse("count_mismatch", f"port {port!r} carries {len(spec.dtypes)} "
                          f"arrays, got fills for {sorted(by_index)}", port)
        if spec.stacked_over and sender not in ctx.senders(port):
            return refuse("unexpected_sender", f"peer {sender} is not a sender of gather "
                          f"{port!r} (class {spec.stacked_over!r})", port)
        if len(pending[port]) >= ctx.config.max_pending:
            return refuse("pending_full", f"port {port!r} holds "
                          f"{ctx.config.max_pending} messages", port)
    messages = {}
    for port, by_index in fills.items():
        leaves = []
        for i in range(len(by_index)):
            leaf = _decode_fill(ctx.port_specs[port], port, i, by_index[i], ctx.config.limits)
            if isinstance(leaf, tuple):
                return refuse(*leaf, port)
            leaves.append(leaf)
        messages[port] = tuple(leaves)
    return sender, messages


def check_local(ctx: NodeContext, port: str, leaves: tuple[np.ndarray, ...]) -> Rejected | None:
    """Why a message the node sends itself on ``port`` does not fit the port, or None."""
    spec = ctx.port_specs[port]
    source = str(ctx.peer)
    if len(leaves) != len(spec.dtypes):
        return Rejected("count_mismatch", f"local message on port {port!r}: {len(leaves)} "
                        f"arrays, the port carries {len(spec.dtypes)}", source, port)
    for i, (leaf, dtype, shape) in enumerate(zip(leaves, spec.dtypes, spec.shapes)):
        if leaf.dtype != dtype or leaf.shape != shape:
            return Rejected(
                "type_mismatch" if leaf.dtype != dtype else "shape_mismatch",
                f"local message on port {port!r} array {i}: {leaf.dtype}{list(leaf.shape)},"
                f" the port carries {dtype}{list(shape)}", source, port)
    if spec.stacked_over and ctx.peer not in ctx.senders(port):
        return Rejected("unexpected_sender", f"this node ({ctx.peer}) is not a sender of "
                        f"gather {port!r} (class {spec.stacked_over!r})", source, port)
    return None


def _decode_fill(spec: PortSpec, port: str, i: int, fill: Fill,
                 limits: Limits) -> np.ndarray | tuple[RejectKind, str]:
    """Array ``i`` of a message on ``port``, or (kind, detail) when the fill does not carry
    exactly the port's type: its hash, then its payload's dtype and shape."""
    dtype, shape, want = spec.dtypes[i], spec.shapes[i], spec.hashes[i]
    where = f"port {port!r} array {i}"
    if fill.type_hash != want:
        return "type_mismatch", (f"{where}: type hash {fill.type_hash:016x}, expected "
                                 f"{want:016x} ({tensor_type_name(dtype, shape)})")
    try:
        array = decode_tensor(fill.payload, limits=limits)
    except TensorDecodeError as exc:
        return "malformed", f"{where}: {exc}"
    if array.dtype != dtype:
        return "type_mismatch", f"{where}: the payload is {array.dtype}, the port carries {dtype}"
    if array.shape != shape:
        return "shape_mismatch", (f"{where}: the payload has shape {list(array.shape)}, the "
                                  f"port carries {list(shape)}")
    return array
