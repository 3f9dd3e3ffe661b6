"""``Node``: a sans-IO peer running installed partitions, driven by ``deliver`` and ``poll``.

The host hands inbound envelope bytes to :meth:`Node.deliver` and calls :meth:`Node.poll`,
which decodes them, runs every partition whose receives all have a message (one message per
receive port per run; partitions without receives run once per :meth:`Node.start`) and
returns :class:`Outbound` envelopes for the host to ship, :class:`AppOutput` values and
:class:`Rejected` events. Remote input never makes ``deliver`` or ``poll`` raise: malformed,
oversized, duplicate or unexpected envelopes become ``Rejected`` events, and a message once
accepted stays queued until a partition consumes it. Messages a node sends to itself are
delivered locally without encoding.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from bbjax.errors import BbjaxError
from bbjax.onnx.dtypes import numpy_dtype
from bbjax.runtime.envelope import DEFAULT_LIMITS, Envelope, Fill, Limits, decode, encode
from bbjax.errors import EnvelopeError
from bbjax.runtime.peer_health import PeerHealth
from bbjax.runtime.step import PartitionStep
from bbjax.runtime.tensor_codec import decode_tensor, encode_tensor, fnv1a64, type_hash


@dataclass(frozen=True)
class NodeConfig:
    """A node's view of the world: peer ids per class, inputs, caps."""

    peers: Mapping[str, Sequence[int]] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    limits: Limits = DEFAULT_LIMITS
    max_inbound: int = 1024       # envelopes accepted by deliver and not yet polled
    max_pending: int = 1024       # decoded messages per port not yet consumed
    dedup_window: int = 8192      # hashes of recent envelopes remembered for deduplication


@dataclass(frozen=True)
class Outbound:
    """Envelope bytes for the host to send to ``peer``."""

    peer: int
    data: bytes


@dataclass(frozen=True)
class AppOutput:
    """A graph output computed by ``target``."""

    target: str
    name: str
    value: Any


@dataclass(frozen=True)
class Rejected:
    """Inbound bytes that were not accepted, and why (``kind``: malformed, duplicate,
    unexpected_port, unexpected_sender, type_mismatch, inbound_full, pending_full)."""

    kind: str
    detail: str
    source: str | None = None


@dataclass(frozen=True)
class Timeout:
    """An envelope to ``peer`` (carrying ``ports``) could not be sent before its deadline."""

    peer: int
    ports: tuple[str, ...]


@dataclass(frozen=True)
class PeerDown:
    """``peer`` failed too many consecutive sends; sends to it wait until one succeeds."""

    peer: int


@dataclass(frozen=True)
class _PortSpec:
    dtypes: tuple[np.dtype, ...]
    shapes: tuple[tuple[int, ...], ...]   # of one message (one sender's arrays)
    hashes: tuple[int, ...]
    stacked_over: str | None = None       # gather ports: the sender class


class Node:
    """One peer hosting one or more partitions; use :func:`bbjax.runtime.install`."""

    def __init__(self, peer: int, steps: Sequence[PartitionStep], states: dict[str, Any],
                 config: NodeConfig, port_specs: Mapping[str, _PortSpec], compiled: Any):
        self.peer = int(peer)
        self.compiled = compiled
        self.steps = list(steps)
        self.states = states
        self.config = config
        self._port_specs = dict(port_specs)
        self._inputs = {f"peers.{c}": np.asarray(ids, np.int32) for c, ids in config.peers.items()}
        self._inputs.update(config.inputs)
        self._jitted = {s.target: jax.jit(s.__call__) for s in self.steps}
        self._inbound: collections.deque[bytes] = collections.deque()
        self._pending: dict[str, collections.deque] = {p: collections.deque() for p in port_specs}
        self._gathered: dict[str, dict[int, list]] = {
            p: {} for p, spec in port_specs.items() if spec.stacked_over}
        self._seen: collections.deque[int] = collections.deque()
        self._seen_set: set[int] = set()
        self._events: list[Any] = []
        self._started: list[PartitionStep] = []
        self._sequence = 0
        self.health = PeerHealth()
        # outbound envelopes not yet shipped: peer, data, deadline, ports, expiry (set when
        # first offered to the host, at the end of the poll that produced it)
        self._held: list[tuple[int, bytes, int, tuple[str, ...], int | None]] = []
        self._now_ns = 0

    # -- host interface -----------------------------------------------------------------------

    def bootstrap(self, step: PartitionStep) -> None:
        """Run a bootstrap partition once (at install): its outputs and sends come out of the
        next poll."""
        if step.receives:
            raise BbjaxError(f"bootstrap partition {step.target!r} receives messages; "
                             "bootstraps may only send")
        self._jitted.setdefault(step.target, jax.jit(step.__call__))
        self._events.extend(self._run(step, {}))

    def start(self) -> None:
        """Run the partitions that receive nothing (a round's entry) at the next poll."""
        self._started.extend(s for s in self.steps if not s.receives)

    def deliver(self, data: bytes) -> bool:
        """Queue inbound envelope bytes; ``False`` (and a Rejected event) when the queue is full."""
        if len(self._inbound) >= self.config.max_inbound:
            self._events.append(Rejected("inbound_full", f"{len(self._inbound)} envelopes "
                                         "already queued"))
            return False
        self._inbound.append(bytes(data))
        return True

    def report_send_failure(self, peer: int, now: float | None = None) -> None:
        """The host could not deliver to ``peer``: back off (and maybe mark it down)."""
        if self.health.failure(int(peer), _ns(now)):
            self._events.append(PeerDown(int(peer)))

    def report_send_success(self, peer: int) -> None:
        """The host delivered to ``peer``: its backoff and failure count are cleared."""
        self.health.success(int(peer))

    def poll(self, now: float | None = None) -> list[Any]:
        """Decode what was delivered, run every ready partition, release envelopes whose
        peer is reachable again, time out those past their deadline, and return the
        resulting steps. ``now`` is the host clock in seconds (default: monotonic time)."""
        self._now_ns = _ns(now)
        while self._inbound:
            self._accept(self._inbound.popleft())
        out: list[Any] = []
        for step in self._started:
            out.extend(self._run(step, {}))
        self._started.clear()
        progressed = True
        while progressed:
            progressed = False
            for step in self.steps:
                if step.receives and all(self._pending[p] for p in step.receives):
                    inbox = {p: self._pending[p].popleft() for p in step.receives}
                    out.extend(self._run(step, inbox))
                    progressed = True
        out.extend(self._release())
        events, self._events = self._events, []
        return events + out

    def pending(self, port: str) -> int:
        """Messages accepted on ``port`` and not yet consumed."""
        return len(self._pending.get(port, ()))

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole node — artifact, targets, config, slot states, accepted messages, queued
        envelopes, dedup window, sequence — as bytes for :meth:`restore`."""
        from bbjax.runtime import snapshot
        return snapshot.dump(self)

    @classmethod
    def restore(cls, data: bytes, bindings: Mapping[str, Any]) -> "Node":
        """The node :meth:`snapshot` saved, with ``bindings`` for its slots (components are
        code, not data). Raises :class:`bbjax.runtime.snapshot.SnapshotError` on bad bytes."""
        from bbjax.runtime import snapshot
        return snapshot.load(data, bindings)

    # -- inbound --------------------------------------------------------------------------------

    def _accept(self, data: bytes) -> None:
        digest = fnv1a64(data)
        if digest in self._seen_set:
            self._events.append(Rejected("duplicate", f"envelope {digest:016x} seen before"))
            return
        try:
            envelope = decode(data, limits=self.config.limits)
        except EnvelopeError as exc:
            self._events.append(Rejected("malformed", str(exc)))
            return
        try:
            messages = self._messages(envelope)
        except _BadMessage as exc:
            self._events.append(Rejected(exc.kind, str(exc), envelope.source))
            return
        for port, leaves in messages.items():
            if port in self._gathered and not self._is_sender(port, envelope.source):
                self._events.append(Rejected("unexpected_sender", f"peer {envelope.source!r} "
                                             f"is not a sender of gather {port!r}",
                                             envelope.source))
                return
            if len(self._pending[port]) >= self.config.max_pending:
                self._events.append(Rejected("pending_full", f"port {port!r} holds "
                                             f"{self.config.max_pending} messages",
                                             envelope.source))
                return
        for port, leaves in messages.items():
            self._enqueue(port, leaves, envelope.source)
        self._remember(digest)

    def _is_sender(self, port: str, source: str) -> bool:
        senders = self.config.peers[self._port_specs[port].stacked_over]
        return source.lstrip("-").isdigit() and int(source) in [int(p) for p in senders]

    def _enqueue(self, port: str, leaves: list, source: str) -> None:
        """Queue a message; a gather port collects one per sender (a repeat replaces) and
        queues the stacked round once every sender has sent."""
        if port not in self._gathered:
            self._pending[port].append(leaves)
            return
        self._gathered[port][int(source)] = leaves  # _is_sender checked it is a peer id
        senders = self.config.peers[self._port_specs[port].stacked_over]
        if len(self._gathered[port]) == len(senders):
            self.close(port)

    def close(self, port: str) -> None:
        """Close gather ``port``'s round now: queue what arrived, absent senders masked out."""
        if port not in self._gathered:
            raise KeyError(f"{port!r} is not a gather port of this node")
        spec = self._port_specs[port]
        senders = [int(p) for p in self.config.peers[spec.stacked_over]]
        got = self._gathered[port]
        stacked = [np.stack([np.asarray(got[p][i]) if p in got else np.zeros(shape, dtype)
                             for p in senders])
                   for i, (dtype, shape) in enumerate(zip(spec.dtypes, spec.shapes))]
        self._pending[port].append([*stacked, np.array([p in got for p in senders])])
        self._gathered[port] = {}

    def _messages(self, envelope: Envelope) -> dict[str, list]:
        grouped: dict[str, dict[int, Fill]] = {}
        for fill in envelope.fills:
            port, _, index = fill.site.rpartition("/")
            if port not in self._port_specs or not index.isdigit():
                raise _Unexpected(f"no partition on this node receives site {fill.site!r}")
            grouped.setdefault(port, {})[int(index)] = fill
        messages = {}
        for port, fills in grouped.items():
            spec = self._port_specs[port]
            if sorted(fills) != list(range(len(spec.hashes))):
                raise _Unexpected(f"port {port!r} expects {len(spec.hashes)} arrays, "
                                  f"got fills {sorted(fills)}")
            leaves = []
            for i, want in enumerate(spec.hashes):
                if fills[i].type_hash != want:
                    raise _TypeMismatch(f"port {port!r} array {i}: type hash "
                                     f"{fills[i].type_hash:016x}, expected {want:016x}")
                try:
                    leaves.append(decode_tensor(fills[i].payload, limits=self.config.limits))
                except EnvelopeError as exc:
                    raise _TypeMismatch(f"port {port!r} array {i}: {exc}") from exc
            messages[port] = leaves
        return messages

    def _remember(self, digest: int) -> None:
        self._seen.append(digest)
        self._seen_set.add(digest)
        if len(self._seen) > self.config.dedup_window:
            self._seen_set.discard(self._seen.popleft())

    # -- running --------------------------------------------------------------------------------

    def _run(self, step: PartitionStep, inbox: dict[str, list]) -> list[Any]:
        states = {s: self.states[s] for s in step.slots}
        new_states, outputs, outbox = self._jitted[step.target](states, self._inputs, inbox)
        self.states.update(new_states)
        out: list[Any] = [AppOutput(step.target, n, v) for n, v in outputs.items()]
        batches: dict[int, list[tuple[str, list]]] = {}  # one envelope per destination peer
        for port, (leaves, peers) in outbox.items():
            for peer in np.asarray(peers).reshape(-1).tolist():
                if peer == self.peer and port in self._pending:
                    self._enqueue(port, [np.asarray(x) for x in leaves], str(self.peer))
                else:
                    batches.setdefault(int(peer), []).append((port, leaves))
        for peer, messages in batches.items():
            deadline = min(step.deadlines.get(port, 0) or 2**63 - 1 for port, _ in messages)
            ports = tuple(port for port, _ in messages)
            data = self._encode(messages, 0 if deadline == 2**63 - 1 else deadline)
            self._held.append((peer, data, deadline, ports, None))
        return out

    def _release(self) -> list[Any]:
        """Ship held envelopes to reachable peers; time out the ones past their deadline."""
        out, kept = [], []
        for peer, data, deadline, ports, expiry in self._held:
            expiry = self._now_ns + deadline if expiry is None else expiry
            if self.health.available(peer, self._now_ns):
                out.append(Outbound(peer, data))
            elif self._now_ns > expiry:
                out.append(Timeout(peer, ports))
            else:
                kept.append((peer, data, deadline, ports, expiry))
        self._held = kept
        return out

    def _encode(self, messages: list[tuple[str, list]], deadline_ns: int) -> bytes:
        self._sequence += 1
        fills = tuple(Fill(f"{port}/{i}", type_hash(np.asarray(x).dtype, np.shape(x)),
                           encode_tensor(np.asarray(x), limits=self.config.limits))
                      for port, leaves in messages for i, x in enumerate(leaves))
        return encode(Envelope(str(self.peer), fills, correlation=self._sequence,
                               deadline_ns=deadline_ns), limits=self.config.limits)


def _ns(now: float | None) -> int:
    return int((time.monotonic() if now is None else now) * 1e9)


class _BadMessage(BbjaxError):
    """A decoded envelope that does not fit this node's receive ports."""

    kind = ""


class _Unexpected(_BadMessage):
    kind = "unexpected_port"


class _TypeMismatch(_BadMessage):
    kind = "type_mismatch"


def port_spec(value_types: Sequence[Any], stacked_over: str | None = None) -> _PortSpec:
    """The arrays one message of a receive port carries, from the Recv's ONNX value types
    (for a gather: the stacked types, whose leading sender dimension is dropped)."""
    dtypes, shapes = [], []
    for vi in value_types:
        tensor = vi.type.tensor_type
        dims = tuple(d.dim_value for d in tensor.shape.dim)
        dtypes.append(np.dtype(jax.dtypes.canonicalize_dtype(numpy_dtype(tensor.elem_type))))
        shapes.append(dims[1:] if stacked_over else dims)
    return _PortSpec(tuple(dtypes), tuple(shapes),
                     tuple(type_hash(d, s) for d, s in zip(dtypes, shapes)), stacked_over)
