"""What the coordinator answers and reports: a message's outcome, phase transitions, metrics.

Every message handed to :meth:`Coordinator.handle` gets exactly one outcome:

- :class:`Accepted`: a whole Sum / Update / Sum2 message changed the round;
- :class:`Buffered`: a chunk of a multipart message, held until the message is whole;
- :class:`Rejected`: the message is wrong (hostile or broken); ``reason`` says how;
- :class:`Discarded`: the message may be fine but is not taken now (wrong phase, phase
  full, multipart buffers full, coordinator shut down).

Rejected and discarded messages leave the coordinator's state as it was, except that a
chunk contradicting its message's earlier chunks drops those chunks.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass

from bbjax.protocols.pet.message import Tag


class Phase(enum.Enum):
    """The coordinator's phases (xaynet's ``PhaseName``)."""

    IDLE = "Idle"
    SUM = "Sum"
    UPDATE = "Update"
    SUM2 = "Sum2"
    UNMASK = "Unmask"
    FAILURE = "Failure"
    SHUTDOWN = "Shutdown"


MESSAGE_PHASES = {Tag.SUM: Phase.SUM, Tag.UPDATE: Phase.UPDATE, Tag.SUM2: Phase.SUM2}
"""The phase that takes each message type."""


class Reason(enum.Enum):
    """Why a message was rejected or discarded."""

    # discarded
    WRONG_PHASE = "wrong_phase"
    """Its type is not the one the current phase takes (or no phase takes messages now)."""
    PHASE_FULL = "phase_full"
    """The phase has accepted ``count.max`` messages already."""
    MULTIPART_FULL = "multipart_full"
    """The multipart buffers hold as many messages or bytes as they may."""
    SHUT_DOWN = "shut_down"
    """The coordinator is shut down."""
    # rejected
    UNDECRYPTABLE = "undecryptable"
    """Not a sealed box to this round's coordinator key."""
    MALFORMED = "malformed"
    """Not a valid PET message (header, payload, or a reassembled multipart payload)."""
    BAD_SIGNATURE = "bad_signature"
    """The message signature is not its participant's."""
    WRONG_COORDINATOR_KEY = "wrong_coordinator_key"
    """The header names another coordinator key than this round's."""
    MULTIPART_INCONSISTENT = "multipart_inconsistent"
    """A chunk contradicts its message's earlier chunks (which are dropped)."""
    NOT_SUM_ELIGIBLE = "not_sum_eligible"
    """A Sum or Sum2 message whose sum signature is invalid or not eligible."""
    NOT_UPDATE_ELIGIBLE = "not_update_eligible"
    """An Update message from a participant not selected for the update task."""
    DUPLICATE_PARTICIPANT = "duplicate_participant"
    """The participant already has a message of this phase accepted (first write wins)."""
    UNKNOWN_SUM_PARTICIPANT = "unknown_sum_participant"
    """A Sum2 message from a participant not in the sum dictionary."""
    SEED_DICT_MISMATCH = "seed_dict_mismatch"
    """An Update's local seed dictionary does not hold exactly the sum participants."""
    MASK_MISMATCH = "mask_mismatch"
    """A masked model or mask that does not fit the round's aggregation (configuration,
    length, model count, an element outside its group)."""


DISCARD_REASONS = frozenset({Reason.WRONG_PHASE, Reason.PHASE_FULL, Reason.MULTIPART_FULL,
                             Reason.SHUT_DOWN})


class FailureReason(enum.Enum):
    """Why a round failed (xaynet's ``PhaseError`` / ``UnmaskError`` variants)."""

    PHASE_TIMEOUT = "phase_timeout"
    """A phase reached ``time.max`` with fewer than ``count.min`` messages accepted."""
    AMBIGUOUS_MASKS = "ambiguous_masks"
    """No single mask has the most votes."""
    NO_MASK = "no_mask"
    """No mask was submitted."""
    UNMASKING_FAILED = "unmasking_failed"
    """The chosen mask does not unmask the aggregate."""


@dataclass(frozen=True)
class Accepted:
    """A whole ``tag`` message was taken into the round."""

    tag: Tag


@dataclass(frozen=True)
class Buffered:
    """A chunk of a multipart ``tag`` message was held until the message is whole."""

    tag: Tag


@dataclass(frozen=True)
class Rejected:
    """The message was refused for ``reason``; ``detail`` says more, for people."""

    reason: Reason
    detail: str = ""


@dataclass(frozen=True)
class Discarded:
    """The message was not taken now, for ``reason``."""

    reason: Reason
    detail: str = ""


Outcome = Accepted | Buffered | Rejected | Discarded


def outcome_kind(outcome: Outcome) -> str:
    """``"accepted"``, ``"buffered"``, ``"rejected"`` or ``"discarded"``."""
    return type(outcome).__name__.lower()


@dataclass(frozen=True)
class Transition:
    """The coordinator moved from ``source`` to ``target`` at ``now`` in round ``round_id``
    (the round the source phase belongs to); ``failure`` says why a round failed."""

    round_id: int
    source: Phase
    target: Phase
    now: float
    failure: FailureReason | None = None


class Metrics:
    """Counts of message outcomes by round, phase, kind and reason (xaynet's
    ``message_accepted`` / ``_rejected`` / ``_discarded`` measurements).

    Metrics observe the coordinator; they are not part of its state bytes.
    """

    def __init__(self) -> None:
        self._counts: collections.Counter[tuple[int, Phase, str, Reason | None]] = (
            collections.Counter())

    def record(self, round_id: int, phase: Phase, outcome: Outcome) -> None:
        """Count one outcome."""
        reason = getattr(outcome, "reason", None)
        self._counts[(round_id, phase, outcome_kind(outcome), reason)] += 1

    def count(self, kind: str, *, reason: Reason | None = None, phase: Phase | None = None,
              round_id: int | None = None) -> int:
        """How many outcomes of ``kind`` (``"accepted"``...) matched the filters given."""
        return sum(n for (r, p, k, why), n in self._counts.items()
                   if k == kind and (reason is None or why is reason)
                   and (phase is None or p is phase) and (round_id is None or r == round_id))

    def as_dict(self) -> dict[tuple[int, str, str, str | None], int]:
        """Every non-zero count, keyed by ``(round_id, phase, kind, reason)`` names."""
        return {(r, p.value, k, None if why is None else why.value): n
                for (r, p, k, why), n in sorted(self._counts.items(), key=_key)}


def _key(item: tuple[tuple[int, Phase, str, Reason | None], int]) -> tuple[int, str, str, str]:
    (r, p, k, why), _ = item
    return (r, p.value, k, "" if why is None else why.value)
