"""Outcome codes that ready-made components record in their state.

A jitted method cannot raise on a traced value, so a rejected call (a zero weight, a full
buffer, an unknown id) leaves the state otherwise unchanged and sets the state's
``status`` field to one of these codes; a successful call sets :attr:`Status.OK`.
"""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """The outcome of a component's last call (stored as an int32 scalar)."""

    OK = 0
    INVALID_WEIGHT = 1  # a contribution's weight was not a finite number > 0
    INVALID_PEER = 2  # a contribution's peer id was negative
    FULL = 3  # no free slot for a new entry
    EMPTY = 4  # nothing to aggregate
    UNKNOWN_ID = 5  # no entry has this id
