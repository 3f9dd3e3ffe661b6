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
without encoding.

A Node is a thin shell: its :class:`NodeContext` (fixed at install) and :class:`NodeState`
(everything it changes) are values, and each method replaces ``node.state`` with what the
pure transition of :mod:`bbjax.runtime.transitions` returns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from bbjax._checks import check_nonnegative
from bbjax.runtime import snapshot, transitions
from bbjax.runtime.events import (
    AppOutput,
    Outbound,
    PeerDown,
    Rejected,
    RejectKind,
    Step,
    Timeout,
    Unsendable,
)
from bbjax.runtime.node_state import (
    MAX_PEER_ID,
    Held,
    NodeConfig,
    NodeContext,
    NodeState,
    PortSpec,
    initial_state,
    parse_peer_id,
    port_spec,
)
from bbjax.runtime.peer_health import PeerHealth
from bbjax.compiler.step import PartitionStep

__all__ = [  # the Node and the values it is made of and gives back, in one place
    "MAX_PEER_ID",
    "AppOutput",
    "Held",
    "Node",
    "NodeConfig",
    "NodeContext",
    "NodeState",
    "Outbound",
    "PeerDown",
    "PortSpec",
    "RejectKind",
    "Rejected",
    "Timeout",
    "Unsendable",
    "parse_peer_id",
    "port_spec",
]


class Node:
    """One peer hosting one or more partitions; use :func:`bbjax.runtime.install`.

    ``ctx`` (a :class:`NodeContext`) is what install fixed; ``state`` (a :class:`NodeState`)
    is the node's current state, which a host may save
    (:func:`bbjax.runtime.node_state.state_to_bytes`) and put back (assign ``node.state``)."""

    def __init__(self, peer: int, steps: Sequence[PartitionStep], states: dict[str, Any],
                 config: NodeConfig, port_specs: Mapping[str, PortSpec], compiled: Any):
        self.ctx = NodeContext.of(peer, steps, states, config, port_specs)
        self.compiled = compiled
        self.state: NodeState = initial_state(self.ctx, states)

    @property
    def peer(self) -> int:
        return self.ctx.peer

    @property
    def steps(self) -> list[PartitionStep]:
        """The installed partitions (bootstraps not included)."""
        return list(self.ctx.steps)

    @property
    def config(self) -> NodeConfig:
        return self.ctx.config

    @property
    def port_specs(self) -> Mapping[str, PortSpec]:
        return self.ctx.port_specs

    @property
    def states(self) -> Mapping[str, Any]:
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
        self.ctx = self.ctx.with_bootstrap(step)
        self.state = transitions.bootstrap(self.ctx, self.state, step.target)

    def start(self) -> None:
        """Run the partitions that receive nothing (a round's entry) at the next poll."""
        self.state = transitions.start(self.ctx, self.state)

    def deliver(self, data: bytes) -> bool:
        """Queue inbound envelope bytes for the next poll. ``False``, and a Rejected event,
        when ``data`` is not bytes-like (``malformed``), is over ``limits.max_envelope_bytes``
        (``oversized``) or ``max_inbound`` envelopes are queued (``inbound_full``)."""
        self.state, accepted = transitions.deliver(self.ctx, self.state, data)
        return accepted

    def report_send_failure(self, peer: int, now: float | None = None) -> None:
        """The host could not deliver to ``peer``: back off (and maybe mark it down)."""
        self.state = transitions.report_send_failure(self.ctx, self.state, peer, _ns(now))

    def report_send_success(self, peer: int) -> None:
        """The host delivered to ``peer``: its backoff and failure count are cleared."""
        self.state = transitions.report_send_success(self.ctx, self.state, peer)

    def poll(self, now: float | None = None) -> list[Step]:
        """Decode what was delivered, run every ready partition, release envelopes whose
        peer is reachable again, time out those past their deadline, and return the
        resulting steps. ``now`` is the host clock in seconds (default: monotonic time)."""
        self.state, steps = transitions.poll(self.ctx, self.state, _ns(now))
        return steps

    def pending(self, port: str) -> int:
        """Messages accepted on ``port`` and not yet consumed."""
        return len(self.state.pending.get(port, ()))

    def close(self, port: str) -> None:
        """Close gather ``port``'s round now: queue what arrived, absent senders zeroed and
        masked out. Raises :class:`InvalidArgument` if ``port`` is no gather port here."""
        self.state = transitions.close(self.ctx, self.state, port)

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole node — artifact, targets, config and :class:`NodeState` — as bytes for
        :meth:`restore` (the same node gives the same bytes)."""
        return snapshot.dump(self)

    @classmethod
    def restore(cls, data: bytes, bindings: Mapping[str, Any]) -> Node:
        """The node :meth:`snapshot` saved, with ``bindings`` for its slots (components are
        code, not data). Raises :class:`bbjax.errors.SnapshotError` for any bytes that are
        not a snapshot of a node these bindings install."""
        return snapshot.load(data, bindings)


def _ns(now: float | None) -> int:
    """The host clock ``now`` (seconds; default monotonic time) in nanoseconds;
    :class:`InvalidArgument` unless it is a finite number >= 0."""
    if now is None:
        return int(time.monotonic() * 1e9)
    return int(check_nonnegative("now", now) * 1e9)
