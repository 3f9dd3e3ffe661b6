"""Retry delays: exponential backoff with full jitter (AWS architecture blog's "full jitter").

Attempt ``n`` (0 for the first retry) waits a uniform draw from ``[0, min(cap, base * 2**n)]``:
many clients retrying after one outage spread out instead of arriving together.
"""

from __future__ import annotations

import dataclasses
import random

from bbjax.errors import InvalidArgument


@dataclasses.dataclass
class Backoff:
    """Delays of ``base`` seconds doubling per attempt up to ``cap``, fully jittered by
    ``rng`` (a :class:`random.Random`; seed it for reproducible delays)."""

    base: float = 0.05
    cap: float = 5.0
    rng: random.Random = dataclasses.field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if not (isinstance(self.base, (int, float)) and 0 < self.base <= self.cap):
            raise InvalidArgument(f"Backoff needs 0 < base <= cap, got base={self.base!r}, "
                                  f"cap={self.cap!r}")

    def ceiling(self, attempt: int) -> float:
        """The largest delay of retry ``attempt`` (0-based)."""
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
            raise InvalidArgument(f"attempt must be an integer >= 0, got {attempt!r}")
        return min(self.cap, self.base * 2.0 ** min(attempt, 64))

    def delay(self, attempt: int) -> float:
        """A jittered delay for retry ``attempt``: uniform in ``[0, ceiling(attempt)]``."""
        return self.rng.uniform(0.0, self.ceiling(attempt))
