"""What a coordinator call changed that a store must keep: :class:`Coordinator.take_effects`.

The coordinator does no IO; a host that persists it applies these records, in order, in one
transaction per call (``docs/deploy.md``). Together they rebuild what xaynet keeps in
Redis: the round's id and seed, its phase, the sum dictionary, the seed dictionary, the
mask votes and the latest global model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bbjax.protocols.pet.coordinator.outcomes import Phase


@dataclass(frozen=True)
class RoundStarted:
    """Round ``round_id`` began (in its Sum phase) with round seed ``seed``; the round's
    dictionaries are empty."""

    round_id: int
    seed: bytes


@dataclass(frozen=True)
class PhaseStarted:
    """Round ``round_id`` entered ``phase`` at ``now``."""

    round_id: int
    phase: Phase
    now: float


@dataclass(frozen=True)
class SumAdded:
    """Sum participant ``participant_pk`` joined with ephemeral key ``ephm_pk``."""

    round_id: int
    participant_pk: bytes
    ephm_pk: bytes


@dataclass(frozen=True)
class UpdateAdded:
    """Update participant ``participant_pk`` was aggregated; ``local_seed_dict`` maps each sum
    participant's pk to its encrypted mask seed."""

    round_id: int
    participant_pk: bytes
    local_seed_dict: dict[bytes, bytes]


@dataclass(frozen=True)
class MaskAdded:
    """Sum participant ``participant_pk`` voted for the aggregated mask ``mask`` (its bytes)."""

    round_id: int
    participant_pk: bytes
    mask: bytes


@dataclass(frozen=True, eq=False)
class ModelUnmasked:
    """Round ``round_id`` ended with the global model ``model`` (float64)."""

    round_id: int
    model: np.ndarray


Effect = RoundStarted | PhaseStarted | SumAdded | UpdateAdded | MaskAdded | ModelUnmasked
