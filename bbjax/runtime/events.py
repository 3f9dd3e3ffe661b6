"""What a Node's transitions give the host: envelopes to ship and typed events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

RejectKind = Literal[
    "inbound_full", "oversized", "truncated", "wrong_version", "malformed", "duplicate",
    "from_self", "unexpected_port", "duplicate_fill", "count_mismatch", "unexpected_sender",
    "pending_full", "type_mismatch", "shape_mismatch",
]


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


Event = AppOutput | Rejected | PeerDown | Unsendable
"""What a NodeState queues for the next poll."""
Step = Outbound | AppOutput | Rejected | Timeout | Unsendable | PeerDown
"""What a poll returns."""
