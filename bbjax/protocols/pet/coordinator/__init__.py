"""The PET coordinator: a sans-IO state machine over one state value (``docs/pet.md``)."""

from bbjax.protocols.pet.coordinator.effects import (
    Effect,
    MaskAdded,
    ModelUnmasked,
    PhaseStarted,
    RoundStarted,
    SumAdded,
    UpdateAdded,
)
from bbjax.protocols.pet.coordinator.machine import Coordinator
from bbjax.protocols.pet.coordinator.outcomes import (
    Accepted,
    Buffered,
    Discarded,
    FailureReason,
    Metrics,
    Outcome,
    Phase,
    Reason,
    Rejected,
    Transition,
)
from bbjax.protocols.pet.coordinator.state import CoordinatorState

__all__ = [
    "Accepted",
    "Buffered",
    "Coordinator",
    "CoordinatorState",
    "Discarded",
    "Effect",
    "FailureReason",
    "MaskAdded",
    "Metrics",
    "ModelUnmasked",
    "Outcome",
    "Phase",
    "PhaseStarted",
    "Reason",
    "Rejected",
    "RoundStarted",
    "SumAdded",
    "Transition",
    "UpdateAdded",
]
