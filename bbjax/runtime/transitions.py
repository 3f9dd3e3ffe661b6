"""A Node's transitions: pure functions ``(ctx, state, input) -> state`` (and what the host
gets back) over a :class:`~bbjax.runtime.node_state.NodeContext` and a
:class:`~bbjax.runtime.node_state.NodeState`. Time is an input (``now_ns``, nanoseconds on
the host clock); the partitions run through the context's jitted steps.

A transition never changes the state it is given, and a remote peer's bytes never make one
raise (they become :class:`Rejected` events); the host's own bad input (a peer id out of
range, a negative time, a port that is no gather) raises :class:`InvalidArgument`.

Cost: the state's FIFOs are persistent :class:`~bbjax.runtime.fifo.Queue` values (push
O(1), pop O(1) amortized), so :func:`deliver`, :func:`start` and the report functions copy
nothing but the small health tables. :func:`poll`, :func:`close` and :func:`bootstrap` copy
each dict they change once per call (the port and slot dicts, a gather's arrivals, the
dedup window when an envelope is accepted: O(dedup_window) references), never an array or
an envelope's bytes.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import numpy as np

from bbjax.errors import EnvelopeError, InvalidArgument, MalformedEnvelope
from bbjax.runtime.envelope import Envelope, Fill, byte_view, encode
from bbjax.runtime.events import (
    AppOutput,
    Outbound,
    PeerDown,
    Rejected,
    Step,
    Timeout,
    Unsendable,
)
from bbjax.runtime.fifo import Queue
from bbjax.runtime.inbound import check_local, digest, read_envelope
from bbjax.runtime.node_state import Held, NodeContext, NodeState, check_peer_id
from bbjax.runtime.tensor_codec import encode_tensor, type_hash

_U64 = 2**64


def deliver(ctx: NodeContext, state: NodeState, data: Any) -> tuple[NodeState, bool]:
    """``state`` with envelope bytes ``data`` queued for the next poll, and ``True``; or
    ``False`` and a Rejected event queued when ``data`` is not bytes-like (``malformed``),
    is over ``limits.max_envelope_bytes`` (``oversized``) or ``max_inbound`` envelopes are
    queued (``inbound_full``)."""
    try:
        view = byte_view(data, MalformedEnvelope)
    except MalformedEnvelope as exc:
        return _refused(state, Rejected("malformed", str(exc)))
    cap = ctx.config.limits.max_envelope_bytes
    if len(view) > cap:
        return _refused(state, Rejected("oversized", f"{len(view)} bytes exceed "
                                        f"Limits.max_envelope_bytes = {cap}"))
    if len(state.inbound) >= ctx.config.max_inbound:
        return _refused(state, Rejected("inbound_full", f"{len(state.inbound)} envelopes "
                                        "already queued"))
    return dataclasses.replace(state, inbound=state.inbound.push(bytes(view))), True


def _refused(state: NodeState, event: Rejected) -> tuple[NodeState, bool]:
    return dataclasses.replace(state, events=state.events.push(event)), False


def start(ctx: NodeContext, state: NodeState) -> NodeState:
    """``state`` with the partitions that receive nothing (a round's entry) scheduled for
    the next poll."""
    return dataclasses.replace(state, started=state.started.extend(ctx.entries))


def bootstrap(ctx: NodeContext, state: NodeState, target: str) -> NodeState:
    """``state`` after running bootstrap partition ``target`` of ``ctx`` once: its outputs
    and sends come out of the next poll."""
    draft = _Draft(state)
    draft.events = draft.events.extend(_run(ctx, draft, ctx.step(target), {}))
    return draft.freeze()


def report_send_failure(ctx: NodeContext, state: NodeState, peer: int,
                        now_ns: int) -> NodeState:
    """``state`` after the host failed to deliver to ``peer`` at ``now_ns``: the peer backs
    off, and a PeerDown event is queued when this failure marks it down."""
    peer, now_ns = check_peer_id("peer", peer), _check_time(now_ns)
    health, down = state.health.failure(peer, now_ns)
    events = state.events.push(PeerDown(peer)) if down else state.events
    return dataclasses.replace(state, health=health, events=events)


def report_send_success(ctx: NodeContext, state: NodeState, peer: int) -> NodeState:
    """``state`` after the host delivered to ``peer``: its backoff and failures cleared."""
    return dataclasses.replace(state, health=state.health.success(check_peer_id("peer", peer)))


def close(ctx: NodeContext, state: NodeState, port: str) -> NodeState:
    """``state`` with gather ``port``'s round closed: what arrived queued, absent senders
    zeroed and masked out. :class:`InvalidArgument` if ``port`` is no gather port of ``ctx``."""
    if not isinstance(port, str) or port not in ctx.gather_ports:
        raise InvalidArgument(f"port must be a gather port of this node "
                              f"({sorted(ctx.gather_ports)}), got {port!r}")
    draft = _Draft(state)
    _close(ctx, draft, port)
    return draft.freeze()


def poll(ctx: NodeContext, state: NodeState, now_ns: int) -> tuple[NodeState, list[Step]]:
    """Decode what was delivered, run every ready partition (the started entries first,
    then any whose receive ports all hold a message, one message each, until none is
    ready), ship held envelopes to peers available at ``now_ns`` and time out those past
    their deadline. Returns the new state and the queued events followed by the steps."""
    now_ns = _check_time(now_ns)
    draft = _Draft(state)
    inbound, draft.inbound = draft.inbound, Queue()
    for data in inbound:
        _accept(ctx, draft, data)
    out: list[Step] = []
    started, draft.started = draft.started, Queue()
    for target in started:
        out.extend(_run(ctx, draft, ctx.step(target), {}))
    progressed = True
    while progressed:
        progressed = False
        for step in ctx.steps:
            if step.receives and all(draft.pending[p] for p in step.receives):
                inbox = {}
                for p in step.receives:
                    message, draft.pending[p] = draft.pending[p].pop()
                    inbox[p] = list(message)
                out.extend(_run(ctx, draft, step, inbox))
                progressed = True
    out.extend(_release(ctx, draft, now_ns))
    events, draft.events = list(draft.events), Queue()
    return draft.freeze(), events + out


def _check_time(now_ns: Any) -> int:
    if isinstance(now_ns, bool) or not isinstance(now_ns, numbers.Integral) or now_ns < 0:
        raise InvalidArgument(f"now_ns must be an integer >= 0, got {now_ns!r}")
    return int(now_ns)


class _Draft:
    """A NodeState being changed by one transition: every field, with the port dicts
    copied and a gather's arrivals and the dedup window copied on their first change."""

    def __init__(self, state: NodeState):
        for f in dataclasses.fields(NodeState):
            setattr(self, f.name, getattr(state, f.name))
        self.pending = dict(state.pending)
        self.gathered = dict(state.gathered)
        self._owned: set[str] = set()  # gather ports whose arrivals dict is this draft's
        self._seen_owned = False

    def arrivals(self, port: str) -> dict[int, tuple]:
        """Gather ``port``'s arrivals, this draft's own to change."""
        if port not in self._owned:
            self.gathered[port] = dict(self.gathered[port])
            self._owned.add(port)
        return self.gathered[port]

    def remember(self, digest: int, window: int) -> None:
        """Add ``digest`` to the dedup window, dropping the oldest beyond ``window``."""
        if not self._seen_owned:
            self.seen, self._seen_owned = dict(self.seen), True
        self.seen[digest] = None
        if len(self.seen) > window:
            del self.seen[next(iter(self.seen))]

    def freeze(self) -> NodeState:
        return NodeState(**{f.name: getattr(self, f.name) for f in dataclasses.fields(NodeState)})


# -- inbound ----------------------------------------------------------------------------------


def _accept(ctx: NodeContext, draft: _Draft, data: bytes) -> None:
    dig = digest(data)
    if dig in draft.seen:
        draft.events = draft.events.push(Rejected("duplicate", f"envelope {dig:016x} was "
                                                  "accepted before"))
        return
    checked = read_envelope(ctx, data, draft.pending)
    if isinstance(checked, Rejected):
        draft.events = draft.events.push(checked)
        return
    sender, messages = checked
    for port, leaves in messages.items():
        _enqueue(ctx, draft, port, leaves, sender)
    draft.remember(dig, ctx.config.dedup_window)


def _enqueue(ctx: NodeContext, draft: _Draft, port: str, leaves: tuple, sender: int) -> None:
    """Queue a checked message; a gather port collects one per sender (a repeat
    replaces) and queues the stacked round once every sender has sent."""
    if port not in draft.gathered:
        draft.pending[port] = draft.pending[port].push(leaves)
        return
    arrivals = draft.arrivals(port)
    arrivals[sender] = leaves
    if len(arrivals) == len(ctx.senders(port)):
        _close(ctx, draft, port)


def _close(ctx: NodeContext, draft: _Draft, port: str) -> None:
    got = draft.gathered[port]
    arrays = [np.zeros(shape, dtype) for dtype, shape in ctx.queued(port)]
    for row, sender in enumerate(ctx.senders(port)):
        if sender in got:
            for array, leaf in zip(arrays, got[sender]):
                array[row] = leaf
            arrays[-1][row] = True
    draft.pending[port] = draft.pending[port].push(tuple(arrays))
    draft.gathered[port] = {}
    draft._owned.add(port)


# -- running and outbound ---------------------------------------------------------------------


def _run(ctx: NodeContext, draft: _Draft, step: Any, inbox: dict[str, list]) -> list[Step]:
    states = {s: draft.slots[s] for s in step.slots}
    new_states, outputs, outbox = ctx.runners[step.target](states, ctx.inputs, inbox)
    draft.slots = {**draft.slots, **new_states}
    out: list[Step] = [AppOutput(step.target, n, v) for n, v in outputs.items()]
    batches: dict[int, list[tuple[str, list]]] = {}  # one envelope per destination peer
    for port, (leaves, peers) in outbox.items():
        for peer in np.asarray(peers).reshape(-1).tolist():
            if peer == ctx.peer and port in ctx.port_specs:
                message = tuple(np.asarray(x) for x in leaves)
                rejected = check_local(ctx, port, message)
                if rejected is None:
                    _enqueue(ctx, draft, port, message, ctx.peer)
                else:
                    draft.events = draft.events.push(rejected)
            else:
                batches.setdefault(int(peer), []).append((port, leaves))
    for peer, messages in batches.items():
        deadlines = [step.deadlines[p] for p, _ in messages if step.deadlines.get(p)]
        deadline = min(deadlines) if deadlines else None
        ports = tuple(p for p, _ in messages)
        try:
            data = _encode(ctx, draft, messages, deadline or 0)
        except EnvelopeError as error:
            out.append(Unsendable(peer, ports, str(error)))
            continue
        draft.held = draft.held.push(Held(peer, data, ports, deadline))
    return out


def _release(ctx: NodeContext, draft: _Draft, now_ns: int) -> list[Step]:
    """Ship held envelopes to reachable peers; time out the ones past their deadline."""
    out: list[Step] = []
    kept = []
    for held in draft.held:
        if held.expiry_ns is None and held.deadline_ns is not None:
            held = dataclasses.replace(held, expiry_ns=now_ns + held.deadline_ns)
        if draft.health.available(held.peer, now_ns):
            out.append(Outbound(held.peer, held.data))
        elif held.expiry_ns is not None and now_ns > held.expiry_ns:
            out.append(Timeout(held.peer, held.ports))
        else:
            kept.append(held)
    draft.held = Queue(kept)
    return out


def _encode(ctx: NodeContext, draft: _Draft, messages: list[tuple[str, list]],
            deadline_ns: int) -> bytes:
    draft.sequence = draft.sequence % (_U64 - 1) + 1  # 1 .. 2**64 - 1
    limits = ctx.config.limits
    fills = tuple(Fill(f"{port}/{i}", type_hash(np.asarray(x).dtype, np.shape(x)),
                       encode_tensor(np.asarray(x), limits=limits))
                  for port, leaves in messages for i, x in enumerate(leaves))
    return encode(Envelope(str(ctx.peer), fills, correlation=draft.sequence,
                           deadline_ns=deadline_ns), limits=limits)
