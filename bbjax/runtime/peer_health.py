"""Peer health for a Node's sends: exponential backoff after failures, down after several.

After the n-th consecutive failure to reach a peer, sends to it wait
``min(BASE_BACKOFF_NS · 2^(n-1), MAX_BACKOFF_NS)``; after ``DOWN_AFTER`` consecutive
failures the peer is down until a send to it succeeds. Times are nanoseconds on the host's
clock. :class:`PeerHealth` is a value: recording a failure or a success returns a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

BASE_BACKOFF_NS = 10_000_000       # 10 ms
MAX_BACKOFF_NS = 60_000_000_000    # 60 s
DOWN_AFTER = 5


@dataclass(frozen=True)
class PeerHealth:
    """Consecutive send failures and the earliest retry time (ns) of each peer that failed
    since its last success. The tables are never changed in place."""

    failures: Mapping[int, int] = field(default_factory=dict)
    retry_at: Mapping[int, int] = field(default_factory=dict)

    def available(self, peer: int, now_ns: int) -> bool:
        """Whether a send to ``peer`` may go out at ``now_ns``."""
        return not self.is_down(peer) and now_ns >= self.retry_at.get(peer, 0)

    def is_down(self, peer: int) -> bool:
        """Whether ``peer`` failed ``DOWN_AFTER`` times in a row."""
        return self.failures.get(peer, 0) >= DOWN_AFTER

    def failure(self, peer: int, now_ns: int) -> tuple[PeerHealth, bool]:
        """The health after a failed send to ``peer`` at ``now_ns``, and whether this
        failure marks the peer down."""
        n = self.failures.get(peer, 0) + 1
        backoff = min(BASE_BACKOFF_NS * 2 ** (n - 1), MAX_BACKOFF_NS)
        return PeerHealth({**self.failures, peer: n},
                          {**self.retry_at, peer: now_ns + backoff}), n == DOWN_AFTER

    def success(self, peer: int) -> PeerHealth:
        """The health after a successful send to ``peer``: its failures forgotten."""
        if peer not in self.failures and peer not in self.retry_at:
            return self
        return PeerHealth({p: n for p, n in self.failures.items() if p != peer},
                          {p: t for p, t in self.retry_at.items() if p != peer})
