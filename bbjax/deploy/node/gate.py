"""The admission gate (sans-IO): which inbound frames a node accepts, and the envelopes
their chunks reassemble to.

:meth:`Gate.admit` checks, in this order (the first that fails is the ``Refused`` reason):
the bytes decode (``malformed``), name this node as receiver (``wrong_receiver``), are
signed by a key of the peer list (``unknown_key``) whose id is the claimed sender
(``impersonation``), carry a valid signature (``bad_signature``) and a seq above the last
one admitted from that sender (``replay``); a chunk must then fit the bounds of its
transfer (``transfer_full``: too many open transfers of the sender, or more than
``max_transfer_bytes``), belong to a transfer in progress if it is not the first
(``transfer_unknown``: the sender resends the transfer from its first chunk, as after this
node restarted and lost its buffers) and follow its transfer's chunks in order with the same
count and chunk size (``transfer_inconsistent``). A refused frame changes nothing but
``counts``.
A transfer that gets no chunk for ``transfer_timeout_ns`` is dropped when the next chunk
frame (of any sender) passes the replay check."""

from __future__ import annotations

import collections
import dataclasses

from bbjax.deploy.node.frames import CHUNK, Frame, decode_frame
from bbjax.deploy.node.peers import Peers
from bbjax.errors import FrameError, InvalidArgument

REASONS = ("malformed", "wrong_receiver", "unknown_key", "impersonation", "bad_signature",
           "replay", "transfer_full", "transfer_unknown", "transfer_inconsistent")


@dataclasses.dataclass(frozen=True)
class Admitted:
    """An admitted frame from ``sender``: ``envelope`` is the whole envelope it completes,
    ``None`` for a chunk that completes none."""

    sender: int
    envelope: bytes | None


@dataclasses.dataclass(frozen=True)
class Refused:
    """A refused frame: ``reason`` is one of :data:`REASONS`, ``sender`` the claimed sender
    (``None`` when the bytes do not decode)."""

    reason: str
    detail: str
    sender: int | None


@dataclasses.dataclass
class _Transfer:
    count: int
    chunk_bytes: int
    parts: list[bytes]
    size: int
    last_ns: int


class Gate:
    """Admission of frames to node ``self_id``; ``last_seq`` resumes persisted seqs."""

    def __init__(self, self_id: int, peers: Peers, *, max_frame_bytes: int,
                 max_transfer_bytes: int, max_transfers_per_peer: int = 4,
                 last_seq: dict[int, int] | None = None,
                 transfer_timeout_ns: int = 60 * 10**9):
        for name, value in (("max_frame_bytes", max_frame_bytes),
                            ("max_transfer_bytes", max_transfer_bytes),
                            ("max_transfers_per_peer", max_transfers_per_peer),
                            ("transfer_timeout_ns", transfer_timeout_ns)):
            if type(value) is not int or value < 1:
                raise InvalidArgument(f"{name} must be an integer >= 1, got {value!r}")
        self.self_id = self_id
        self.peers = peers
        self.max_frame_bytes = max_frame_bytes
        self.max_transfer_bytes = max_transfer_bytes
        self.max_transfers_per_peer = max_transfers_per_peer
        self.transfer_timeout_ns = transfer_timeout_ns
        self._last_seq = {int(k): int(v) for k, v in (last_seq or {}).items()}
        self._transfers: dict[tuple[int, int], _Transfer] = {}
        self.counts: collections.Counter[str] = collections.Counter()

    @property
    def last_seq(self) -> dict[int, int]:
        """The seq to persist per sender (a copy): the last one admitted, or, while a
        transfer of the sender is in progress, the one before its first chunk, so that a
        gate restarted from it (its buffers lost) admits the resent transfer whole."""
        out = dict(self._last_seq)
        for sender, transfer in self._transfers:
            out[sender] = min(out[sender], transfer - 1)
        return out

    def open_transfers(self) -> dict[int, int]:
        """How many transfers each sender has in progress."""
        return dict(collections.Counter(sender for sender, _ in self._transfers))

    def admit(self, data: bytes, now_ns: int) -> Admitted | Refused:
        """Check ``data`` at host time ``now_ns`` (module docstring); never raises on it."""
        if type(now_ns) is not int or now_ns < 0:
            raise InvalidArgument(f"now_ns must be an integer >= 0, got {now_ns!r}")
        try:
            frame = decode_frame(data, max_frame_bytes=self.max_frame_bytes)
        except FrameError as exc:
            return self._refuse("malformed", str(exc), None)
        outcome = self._check(frame, now_ns)
        if isinstance(outcome, Refused):
            self.counts[outcome.reason] += 1
        else:
            self._last_seq[frame.sender] = frame.seq
            self.counts["admitted"] += 1
        return outcome

    def _check(self, frame: Frame, now_ns: int) -> Admitted | Refused:
        sender = frame.sender
        if frame.receiver != self.self_id:
            return Refused("wrong_receiver", f"frame for peer {frame.receiver}, this is peer "
                           f"{self.self_id}", sender)
        signer = self.peers.id_of_key(frame.signer)
        if signer is None:
            return Refused("unknown_key", f"signer key {frame.signer.hex()} is no peer's",
                           sender)
        if signer != sender:
            return Refused("impersonation", f"peer {signer}'s key signs a frame claiming "
                           f"sender {sender}", sender)
        if not frame.verify():
            return Refused("bad_signature", f"the signature is not peer {sender}'s", sender)
        last = self._last_seq.get(sender, 0)
        if frame.seq <= last:
            return Refused("replay", f"seq {frame.seq} is not above peer {sender}'s last "
                           f"admitted seq {last}", sender)
        if frame.kind != CHUNK:
            return Admitted(sender, frame.payload)
        self._expire(now_ns)
        return self._chunk(frame, now_ns)

    def _chunk(self, frame: Frame, now_ns: int) -> Admitted | Refused:
        sender, key = frame.sender, (frame.sender, frame.transfer)
        where = f"transfer {frame.transfer} chunk {frame.index}/{frame.count}"
        if frame.seq != frame.transfer + frame.index:
            return Refused("transfer_inconsistent", f"{where}: seq {frame.seq} is not "
                           "transfer + index", sender)
        final = frame.index == frame.count - 1
        if frame.index == 0:
            chunk_bytes = len(frame.payload)
            least = (frame.count - 1) * chunk_bytes + (1 if frame.count > 1 else chunk_bytes)
            if least > self.max_transfer_bytes:
                return Refused("transfer_full", f"{where}: at least {least} bytes, over the "
                               f"{self.max_transfer_bytes}-byte cap", sender)
            if not final and chunk_bytes == 0:
                return Refused("transfer_inconsistent", f"{where}: an empty chunk", sender)
            open_now = sum(1 for s, _ in self._transfers if s == sender)
            if open_now >= self.max_transfers_per_peer:
                return Refused("transfer_full", f"{where}: peer {sender} has {open_now} "
                               "transfers in progress", sender)
            if final:
                return Admitted(sender, frame.payload)
            self._transfers[key] = _Transfer(frame.count, chunk_bytes, [frame.payload],
                                             chunk_bytes, now_ns)
            return Admitted(sender, None)
        transfer = self._transfers.get(key)
        if transfer is None:
            return Refused("transfer_unknown", f"{where}: no such transfer in progress",
                           sender)
        if frame.count != transfer.count:
            return Refused("transfer_inconsistent", f"{where}: the transfer has "
                           f"{transfer.count} chunks", sender)
        if frame.index != len(transfer.parts):
            return Refused("transfer_inconsistent", f"{where}: chunk {len(transfer.parts)} "
                           "is next", sender)
        size = len(frame.payload)
        if size > transfer.chunk_bytes or (not final and size != transfer.chunk_bytes) \
                or size == 0:
            return Refused("transfer_inconsistent", f"{where}: {size} bytes, the transfer's "
                           f"chunks are {transfer.chunk_bytes}", sender)
        if transfer.size + size > self.max_transfer_bytes:
            return Refused("transfer_full", f"{where}: the transfer grows over the "
                           f"{self.max_transfer_bytes}-byte cap", sender)
        transfer.parts.append(frame.payload)
        transfer.size += size
        transfer.last_ns = now_ns
        if not final:
            return Admitted(sender, None)
        del self._transfers[key]
        return Admitted(sender, b"".join(transfer.parts))

    def _expire(self, now_ns: int) -> None:
        for key in [k for k, t in self._transfers.items()
                    if now_ns - t.last_ns > self.transfer_timeout_ns]:
            del self._transfers[key]

    def _refuse(self, reason: str, detail: str, sender: int | None) -> Refused:
        self.counts[reason] += 1
        return Refused(reason, detail, sender)
