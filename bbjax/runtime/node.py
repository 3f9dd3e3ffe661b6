"""``Node``: a sans-IO peer running installed partitions, driven by ``deliver`` and ``poll``.

The host hands inbound envelope bytes to :meth:`Node.deliver` and calls :meth:`Node.poll`,
which decodes them, runs every partition whose receives all have a message (one message per
receive port per run; partitions without receives run once per :meth:`Node.start`) and
returns :class:`Outbound` envelopes for the host to ship, :class:`AppOutput` values and
:class:`Rejected` events. Whatever a peer sends, ``deliver`` and ``poll`` never raise: an
envelope is accepted whole only when its source is a peer id and every fill matches its
port's type hash, dtype and shape; anything else is one ``Rejected`` event (its kinds are
:data:`RejectKind`, tabled in ``docs/runtime.md``). A message once accepted stays queued
until a partition consumes it. Messages a node sends to itself are delivered locally
without encoding. Everything a node changes as it runs is one :class:`NodeState` value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jax
import numpy as np

from bbjax._checks import check_count, check_nonnegative
from bbjax.errors import (
    BbjaxError,
    EnvelopeError,
    InvalidArgument,
    MalformedEnvelope,
    OversizedEnvelope,
    TensorDecodeError,
    TruncatedEnvelope,
    UnsupportedVersion,
)
from bbjax.runtime.envelope import (
    DEFAULT_LIMITS,
    Envelope,
    Fill,
    Limits,
    byte_view,
    decode,
    encode,
)
from bbjax.runtime.peer_health import PeerHealth
from bbjax.runtime.step import PartitionStep
from bbjax.runtime.tensor_codec import (
    decode_tensor,
    encode_tensor,
    tensor_type_name,
    type_hash,
)

MAX_PEER_ID = 2**31 - 1  # peer ids are int32 graph inputs (``peers.<class>``)
_U64 = 2**64

RejectKind = Literal[
    "inbound_full", "oversized", "truncated", "wrong_version", "malformed", "duplicate",
    "from_self", "unexpected_port", "duplicate_fill", "count_mismatch", "unexpected_sender",
    "pending_full", "type_mismatch", "shape_mismatch",
]
_DECODE_KINDS: dict[type[EnvelopeError], RejectKind] = {
    TruncatedEnvelope: "truncated", OversizedEnvelope: "oversized",
    UnsupportedVersion: "wrong_version",
}


def parse_peer_id(text: str) -> int | None:
    """The peer id ``text`` spells (canonical ASCII decimal in [0, MAX_PEER_ID]), or None."""
    value = _parse_decimal(text, len(str(MAX_PEER_ID)))
    return value if value is not None and value <= MAX_PEER_ID else None


def _parse_decimal(text: str, max_digits: int) -> int | None:
    """``int(text)`` if ``text`` is 1 to ``max_digits`` ASCII digits without a leading zero."""
    if (0 < len(text) <= max_digits and text.isascii() and text.isdigit()
            and (text == "0" or text[0] != "0")):
        return int(text)
    return None


def _check_peer_id(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or not 0 <= value <= MAX_PEER_ID:
        raise InvalidArgument(f"{name} must be a peer id, an integer in [0, {MAX_PEER_ID}], "
                              f"got {value!r}")
    return int(value)


@dataclass(frozen=True)
class NodeConfig:
    """A node's view of the world: peer ids per class (distinct, in [0, MAX_PEER_ID]),
    inputs, caps (each an integer >= 1). Raises :class:`InvalidArgument` otherwise."""

    peers: Mapping[str, Sequence[int]] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    limits: Limits = DEFAULT_LIMITS
    max_inbound: int = 1024       # envelopes accepted by deliver and not yet polled
    max_pending: int = 1024       # decoded messages per port not yet consumed
    dedup_window: int = 8192      # digests of recently accepted envelopes

    def __post_init__(self) -> None:
        if not isinstance(self.limits, Limits):
            raise InvalidArgument(f"NodeConfig.limits must be a Limits, "
                                  f"got {type(self.limits).__name__}")
        for name in ("max_inbound", "max_pending", "dedup_window"):
            check_count(f"NodeConfig.{name}", getattr(self, name))
        peers: dict[str, tuple[int, ...]] = {}
        for cls, ids in dict(self.peers).items():
            if not isinstance(cls, str):
                raise InvalidArgument(f"NodeConfig.peers keys must be class names, got {cls!r}")
            try:
                entries = list(ids)
            except TypeError:
                raise InvalidArgument(f"NodeConfig.peers[{cls!r}] must be a sequence of peer "
                                      f"ids, got {ids!r}") from None
            peers[cls] = tuple(_check_peer_id(f"NodeConfig.peers[{cls!r}] entry", p)
                               for p in entries)
            if len(set(peers[cls])) != len(peers[cls]):
                raise InvalidArgument(f"NodeConfig.peers[{cls!r}] repeats a peer id: "
                                      f"{list(peers[cls])}")
        object.__setattr__(self, "peers", peers)


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
    """Inbound bytes that were not accepted: ``kind`` (a :data:`RejectKind`) says why,
    ``detail`` what exactly; ``source`` is the envelope's source and ``port`` the port at
    fault, each when known."""

    kind: RejectKind
    detail: str
    source: str | None = None
    port: str | None = None


@dataclass(frozen=True)
class Timeout:
    """An envelope to ``peer`` (carrying ``ports``) could not be sent before its deadline."""

    peer: int
    ports: tuple[str, ...]


@dataclass(frozen=True)
class Unsendable:
    """The messages for ``peer`` (on ``ports``) do not fit the node's own wire limits
    (``detail`` says which); they are dropped, the rest of the step goes on."""

    peer: int
    ports: tuple[str, ...]
    detail: str


@dataclass(frozen=True)
class PeerDown:
    """``peer`` failed too many consecutive sends; sends to it wait until one succeeds."""

    peer: int


@dataclass(frozen=True)
class PortSpec:
    """The arrays one message on a receive port carries; on a gather port, one sender's
    (the round is stacked over ``stacked_over``, the sender class)."""

    dtypes: tuple[np.dtype, ...]
    shapes: tuple[tuple[int, ...], ...]
    hashes: tuple[int, ...]
    stacked_over: str | None = None

    def queued(self, senders: int) -> list[tuple[np.dtype, tuple[int, ...]]]:
        """(dtype, shape) of each array of a queued message: for a gather, the arrays
        stacked over ``senders`` and the bool arrival mask."""
        if self.stacked_over is None:
            return list(zip(self.dtypes, self.shapes))
        return [*((d, (senders, *s)) for d, s in zip(self.dtypes, self.shapes)),
                (np.dtype(bool), (senders,))]


@dataclass(frozen=True)
class Held:
    """An outbound envelope not yet shipped. It times out ``deadline_ns`` after it was first
    offered to the host (``expiry_ns``, set then); with no deadline (None), never."""

    peer: int
    data: bytes
    ports: tuple[str, ...]
    deadline_ns: int | None
    expiry_ns: int | None = None


@dataclass
class NodeState:
    """Everything a Node changes as it runs, as one value (:meth:`Node.snapshot` saves it)."""

    slots: dict[str, Any]                                 # slot -> its component's state
    pending: dict[str, list[list[np.ndarray]]]            # port -> messages, oldest first
    gathered: dict[str, dict[int, list[np.ndarray]]]      # gather port -> sender -> arrays
    inbound: list[bytes] = field(default_factory=list)    # delivered, not yet polled
    held: list[Held] = field(default_factory=list)        # outbound, not yet shipped
    seen: dict[int, None] = field(default_factory=dict)   # accepted digests, oldest first
    started: list[str] = field(default_factory=list)      # targets to run at the next poll
    sequence: int = 0                                     # correlation of the last send
    health: PeerHealth = field(default_factory=PeerHealth)
    events: list[AppOutput | Rejected | PeerDown] = field(default_factory=list)  # for poll


class Node:
    """One peer hosting one or more partitions; use :func:`bbjax.runtime.install`."""

    def __init__(self, peer: int, steps: Sequence[PartitionStep], states: dict[str, Any],
                 config: NodeConfig, port_specs: Mapping[str, PortSpec], compiled: Any):
        self.peer = _check_peer_id("peer", peer)
        self.compiled = compiled
        self.steps = list(steps)
        self.config = config
        self.port_specs = dict(port_specs)
        self._inputs = {f"peers.{c}": np.asarray(ids, np.int32) for c, ids in config.peers.items()}
        self._inputs.update(config.inputs)
        self._by_target = {s.target: s for s in self.steps}
        self._jitted = {s.target: jax.jit(s.__call__) for s in self.steps}
        self.state = NodeState(
            slots=states, pending={p: [] for p in self.port_specs},
            gathered={p: {} for p, spec in self.port_specs.items() if spec.stacked_over})

    @property
    def states(self) -> dict[str, Any]:
        """Each slot's component state."""
        return self.state.slots

    @property
    def health(self) -> PeerHealth:
        """Backoff and failure counts of the peers this node sends to."""
        return self.state.health

    # -- host interface -----------------------------------------------------------------------

    def bootstrap(self, step: PartitionStep) -> None:
        """Run a bootstrap partition once (at install): its outputs and sends come out of the
        next poll."""
        if step.receives:
            raise BbjaxError(f"bootstrap partition {step.target!r} receives messages; "
                             "bootstraps may only send")
        self._jitted.setdefault(step.target, jax.jit(step.__call__))
        self.state.events.extend(self._run(step, {}))

    def start(self) -> None:
        """Run the partitions that receive nothing (a round's entry) at the next poll."""
        self.state.started.extend(s.target for s in self.steps if not s.receives)

    def deliver(self, data: bytes) -> bool:
        """Queue inbound envelope bytes for the next poll. ``False``, and a Rejected event,
        when ``data`` is not bytes-like (``malformed``), is over ``limits.max_envelope_bytes``
        (``oversized``) or ``max_inbound`` envelopes are queued (``inbound_full``)."""
        try:
            view = byte_view(data, MalformedEnvelope)
        except MalformedEnvelope as exc:
            return self._refuse(Rejected("malformed", str(exc)))
        cap = self.config.limits.max_envelope_bytes
        if len(view) > cap:
            return self._refuse(Rejected("oversized", f"{len(view)} bytes exceed "
                                         f"Limits.max_envelope_bytes = {cap}"))
        if len(self.state.inbound) >= self.config.max_inbound:
            return self._refuse(Rejected("inbound_full", f"{len(self.state.inbound)} "
                                         "envelopes already queued"))
        self.state.inbound.append(bytes(view))
        return True

    def report_send_failure(self, peer: int, now: float | None = None) -> None:
        """The host could not deliver to ``peer``: back off (and maybe mark it down)."""
        peer = _check_peer_id("peer", peer)
        if self.state.health.failure(peer, _ns(now)):
            self.state.events.append(PeerDown(peer))

    def report_send_success(self, peer: int) -> None:
        """The host delivered to ``peer``: its backoff and failure count are cleared."""
        self.state.health.success(_check_peer_id("peer", peer))

    def poll(self, now: float | None = None) -> list[Any]:
        """Decode what was delivered, run every ready partition, release envelopes whose
        peer is reachable again, time out those past their deadline, and return the
        resulting steps. ``now`` is the host clock in seconds (default: monotonic time)."""
        now_ns = _ns(now)
        while self.state.inbound:
            self._accept(self.state.inbound.pop(0))
        out: list[Any] = []
        started, self.state.started = self.state.started, []
        for target in started:
            out.extend(self._run(self._by_target[target], {}))
        progressed = True
        while progressed:
            progressed = False
            for step in self.steps:
                if step.receives and all(self.state.pending[p] for p in step.receives):
                    inbox = {p: self.state.pending[p].pop(0) for p in step.receives}
                    out.extend(self._run(step, inbox))
                    progressed = True
        out.extend(self._release(now_ns))
        events, self.state.events = self.state.events, []
        return events + out

    def pending(self, port: str) -> int:
        """Messages accepted on ``port`` and not yet consumed."""
        return len(self.state.pending.get(port, ()))

    def close(self, port: str) -> None:
        """Close gather ``port``'s round now: queue what arrived, absent senders zeroed and
        masked out. Raises :class:`InvalidArgument` if ``port`` is no gather port here."""
        if not isinstance(port, str) or port not in self.state.gathered:
            raise InvalidArgument(f"port must be a gather port of this node "
                                  f"({sorted(self.state.gathered)}), got {port!r}")
        spec = self.port_specs[port]
        senders = self.config.peers[spec.stacked_over]
        got = self.state.gathered[port]
        arrays = [np.zeros(shape, dtype) for dtype, shape in spec.queued(len(senders))]
        for row, sender in enumerate(senders):
            if sender in got:
                for array, leaf in zip(arrays, got[sender]):
                    array[row] = leaf
                arrays[-1][row] = True
        self.state.pending[port].append(arrays)
        self.state.gathered[port] = {}

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole node — artifact, targets, config and :class:`NodeState` — as bytes for
        :meth:`restore` (the same node gives the same bytes)."""
        from bbjax.runtime import snapshot
        return snapshot.dump(self)

    @classmethod
    def restore(cls, data: bytes, bindings: Mapping[str, Any]) -> Node:
        """The node :meth:`snapshot` saved, with ``bindings`` for its slots (components are
        code, not data). Raises :class:`bbjax.errors.SnapshotError` for any bytes that are
        not a snapshot of a node these bindings install."""
        from bbjax.runtime import snapshot
        return snapshot.load(data, bindings)

    # -- inbound --------------------------------------------------------------------------------

    def _refuse(self, event: Rejected) -> bool:
        self.state.events.append(event)
        return False

    def _accept(self, data: bytes) -> None:
        digest = _digest(data)
        if digest in self.state.seen:
            self.state.events.append(Rejected("duplicate", f"envelope {digest:016x} was "
                                              "accepted before"))
            return
        try:
            envelope = decode(data, limits=self.config.limits)
        except EnvelopeError as exc:
            self.state.events.append(Rejected(_DECODE_KINDS.get(type(exc), "malformed"),
                                              str(exc)))
            return
        checked = self._check(envelope)
        if isinstance(checked, Rejected):
            self.state.events.append(checked)
            return
        sender, messages = checked
        for port, leaves in messages.items():
            self._enqueue(port, leaves, sender)
        self._remember(digest)

    def _check(self, envelope: Envelope) -> tuple[int, dict[str, list[np.ndarray]]] | Rejected:
        """The sender and each port's arrays, or why the envelope is refused (the first
        failing check, cheapest first)."""
        source = envelope.source

        def refuse(kind: RejectKind, detail: str, port: str | None = None) -> Rejected:
            return Rejected(kind, detail, source, port)

        sender = parse_peer_id(source)
        if sender is None:
            return refuse("malformed", f"source {source!r} is not a peer id (a decimal "
                          f"integer in [0, {MAX_PEER_ID}], no sign or leading zero)")
        if sender == self.peer:
            return refuse("from_self", f"the envelope claims to come from this node "
                          f"({sender}); a node's messages to itself never cross the wire")
        fills: dict[str, dict[int, Fill]] = {}
        for fill in envelope.fills:
            port, slash, index = fill.site.rpartition("/")
            if not slash or port not in self.port_specs:
                return refuse("unexpected_port", f"no partition on this node receives site "
                              f"{fill.site!r}", port if slash else None)
            count = len(self.port_specs[port].dtypes)
            i = _parse_decimal(index, 5)
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
            spec = self.port_specs[port]
            if len(by_index) != len(spec.dtypes):
                return refuse("count_mismatch", f"port {port!r} carries {len(spec.dtypes)} "
                              f"arrays, got fills for {sorted(by_index)}", port)
            if spec.stacked_over and sender not in self.config.peers[spec.stacked_over]:
                return refuse("unexpected_sender", f"peer {sender} is not a sender of gather "
                              f"{port!r} (class {spec.stacked_over!r})", port)
            if len(self.state.pending[port]) >= self.config.max_pending:
                return refuse("pending_full", f"port {port!r} holds "
                              f"{self.config.max_pending} messages", port)
        messages = {}
        for port, by_index in fills.items():
            leaves = []
            for i in range(len(by_index)):
                leaf = _decode_fill(self.port_specs[port], port, i, by_index[i],
                                    self.config.limits)
                if isinstance(leaf, tuple):
                    return refuse(*leaf, port)
                leaves.append(leaf)
            messages[port] = leaves
        return sender, messages

    def _enqueue(self, port: str, leaves: list[np.ndarray], sender: int) -> None:
        """Queue a checked message; a gather port collects one per sender (a repeat
        replaces) and queues the stacked round once every sender has sent."""
        if port not in self.state.gathered:
            self.state.pending[port].append(leaves)
            return
        self.state.gathered[port][sender] = leaves
        if len(self.state.gathered[port]) == len(
                self.config.peers[self.port_specs[port].stacked_over]):
            self.close(port)

    def _deliver_local(self, port: str, leaves: list[np.ndarray]) -> None:
        spec = self.port_specs[port]
        source = str(self.peer)
        if len(leaves) != len(spec.dtypes):
            self.state.events.append(Rejected(
                "count_mismatch", f"local message on port {port!r}: {len(leaves)} arrays, the "
                f"port carries {len(spec.dtypes)}", source, port))
            return
        for i, (leaf, dtype, shape) in enumerate(zip(leaves, spec.dtypes, spec.shapes)):
            if leaf.dtype != dtype or leaf.shape != shape:
                self.state.events.append(Rejected(
                    "type_mismatch" if leaf.dtype != dtype else "shape_mismatch",
                    f"local message on port {port!r} array {i}: {leaf.dtype}{list(leaf.shape)},"
                    f" the port carries {dtype}{list(shape)}", source, port))
                return
        if spec.stacked_over and self.peer not in self.config.peers[spec.stacked_over]:
            self.state.events.append(Rejected(
                "unexpected_sender", f"this node ({self.peer}) is not a sender of gather "
                f"{port!r} (class {spec.stacked_over!r})", source, port))
            return
        self._enqueue(port, leaves, self.peer)

    def _remember(self, digest: int) -> None:
        seen = self.state.seen
        seen[digest] = None
        if len(seen) > self.config.dedup_window:
            del seen[next(iter(seen))]

    # -- running --------------------------------------------------------------------------------

    def _run(self, step: PartitionStep, inbox: dict[str, list]) -> list[Any]:
        slots = self.state.slots
        states = {s: slots[s] for s in step.slots}
        new_states, outputs, outbox = self._jitted[step.target](states, self._inputs, inbox)
        slots.update(new_states)
        out: list[Any] = [AppOutput(step.target, n, v) for n, v in outputs.items()]
        batches: dict[int, list[tuple[str, list]]] = {}  # one envelope per destination peer
        for port, (leaves, peers) in outbox.items():
            for peer in np.asarray(peers).reshape(-1).tolist():
                if peer == self.peer and port in self.port_specs:
                    self._deliver_local(port, [np.asarray(x) for x in leaves])
                else:
                    batches.setdefault(int(peer), []).append((port, leaves))
        for peer, messages in batches.items():
            deadlines = [step.deadlines[p] for p, _ in messages if step.deadlines.get(p)]
            deadline = min(deadlines) if deadlines else None
            ports = tuple(p for p, _ in messages)
            try:
                data = self._encode(messages, deadline or 0)
            except EnvelopeError as error:
                out.append(Unsendable(peer, ports, str(error)))
                continue
            self.state.held.append(Held(peer, data, ports, deadline))
        return out

    def _release(self, now_ns: int) -> list[Any]:
        """Ship held envelopes to reachable peers; time out the ones past their deadline."""
        out, kept = [], []
        for held in self.state.held:
            if held.expiry_ns is None and held.deadline_ns is not None:
                held = dataclasses.replace(held, expiry_ns=now_ns + held.deadline_ns)
            if self.state.health.available(held.peer, now_ns):
                out.append(Outbound(held.peer, held.data))
            elif held.expiry_ns is not None and now_ns > held.expiry_ns:
                out.append(Timeout(held.peer, held.ports))
            else:
                kept.append(held)
        self.state.held = kept
        return out

    def _encode(self, messages: list[tuple[str, list]], deadline_ns: int) -> bytes:
        self.state.sequence = self.state.sequence % (_U64 - 1) + 1  # 1 .. 2**64 - 1
        limits = self.config.limits
        fills = tuple(Fill(f"{port}/{i}", type_hash(np.asarray(x).dtype, np.shape(x)),
                           encode_tensor(np.asarray(x), limits=limits))
                      for port, leaves in messages for i, x in enumerate(leaves))
        return encode(Envelope(str(self.peer), fills, correlation=self.state.sequence,
                               deadline_ns=deadline_ns), limits=limits)


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


def _digest(data: bytes) -> int:
    """The dedup digest of envelope bytes (64-bit BLAKE2b)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _ns(now: float | None) -> int:
    """The host clock ``now`` (seconds; default monotonic time) in nanoseconds;
    :class:`InvalidArgument` unless it is a finite number >= 0."""
    if now is None:
        return int(time.monotonic() * 1e9)
    return int(check_nonnegative("now", now) * 1e9)


def port_spec(values: Sequence[Any], stacked_over: str | None = None) -> PortSpec:
    """The arrays one message of a receive port carries (for a gather: one sender's), from
    the receive's :class:`bbjax.compiler.program.TensorType` values of fixed shapes."""
    dtypes = [np.dtype(jax.dtypes.canonicalize_dtype(v.dtype)) for v in values]
    shapes = [tuple(v.shape) for v in values]
    return PortSpec(tuple(dtypes), tuple(shapes),
                    tuple(type_hash(d, s) for d, s in zip(dtypes, shapes)), stacked_over)
