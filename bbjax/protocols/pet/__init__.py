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
from bbjax.protocols.pet.masking import (
    Aggregation,
    Masker,
    MaskObject,
    MaskSeed,
    MaskUnit,
    MaskVect,
)
from bbjax.protocols.pet.prng import Prng

__all__ = [
    "Aggregation",
    "BoundType",
    "DataType",
    "GroupType",
    "MaskConfig",
    "MaskConfigPair",
    "MaskObject",
    "MaskSeed",
    "MaskUnit",
    "MaskVect",
    "Masker",
    "ModelType",
    "Prng",
]
