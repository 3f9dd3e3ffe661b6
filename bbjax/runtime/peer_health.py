"""Peer health for a Node's sends: exponential backoff after failures, down after several.

After the n-th consecutive failure to reach a peer, sends to it wait
``min(BASE_BACKOFF_NS · 2^(n-1), MAX_BACKOFF_NS)``; after ``DOWN_AFTER`` consecutive
failures the peer is down until a send to it succeeds. Times are nanoseconds on the host's
clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BASE_BACKOFF_NS = 10_000_000       # 10 ms
MAX_BACKOFF_NS = 60_000_000_000    # 60 s
DOWN_AFTER = 5


@dataclass
class PeerHealth:
    failures: dict[int, int] = field(default_factory=dict)
    retry_at: dict[int, int] = field(default_factory=dict)

    def available(self, peer: int, now_ns: int) -> bool:
        return not self.is_down(peer) and now_ns >= self.retry_at.get(peer, 0)

    def is_down(self, peer: int) -> bool:
        return self.failures.get(peer, 0) >= DOWN_AFTER

    def failure(self, peer: int, now_ns: int) -> bool:
        """Record a failed send; ``True`` when this failure marks the peer down."""
        n = self.failures.get(peer, 0) + 1
        self.failures[peer] = n
        self.retry_at[peer] = now_ns + min(BASE_BACKOFF_NS * 2 ** (n - 1), MAX_BACKOFF_NS)
        return n == DOWN_AFTER

    def success(self, peer: int) -> None:
        self.failures.pop(peer, None)
        self.retry_at.pop(peer, None)
