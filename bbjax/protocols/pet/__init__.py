"""xaynet's PET secure-aggregation protocol: exact masking, sortition, messages, and the
coordinator and participant as sans-IO state machines (``docs/pet.md``)."""

from bbjax.protocols.pet.config import (
    BoundType,
    DataType,
    GroupType,
    MaskConfig,
    MaskConfigPair,
    ModelType,
)
from bbjax.protocols.pet.prng import Prng

__all__ = [
    "BoundType",
    "DataType",
    "GroupType",
    "MaskConfig",
    "MaskConfigPair",
    "ModelType",
    "Prng",
]
