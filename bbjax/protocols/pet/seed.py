"""Mask seeds and the deterministic derivation of a mask from one (xaynet's ``MaskSeed``)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from bbjax.errors import MaskingError
from bbjax.protocols.pet.config import MaskConfigPair
from bbjax.protocols.pet.object import MaskObject, MaskUnit, MaskVect
from bbjax.protocols.pet.prng import SEED_BYTES, Prng


@dataclass(frozen=True)
class MaskSeed:
    """32 secret bytes that seed the ChaCha20 PRNG of one mask."""

    value: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.value, (bytes, bytearray)) or len(self.value) != SEED_BYTES:
            got = len(self.value) if isinstance(self.value, (bytes, bytearray)) else self.value
            raise MaskingError(f"mask seed must be {SEED_BYTES} bytes, got {got!r}")
        object.__setattr__(self, "value", bytes(self.value))

    @classmethod
    def generate(cls) -> MaskSeed:
        """A fresh seed from the operating system's CSPRNG."""
        return cls(secrets.token_bytes(SEED_BYTES))

    def as_bytes(self) -> bytes:
        """The 32 seed bytes."""
        return self.value

    def derive_mask(self, length: int, config: MaskConfigPair) -> MaskObject:
        """The mask this seed stands for: the unit's element first, then ``length`` vector
        elements, each drawn uniformly below its group order."""
        if not isinstance(config, MaskConfigPair):
            raise MaskingError(f"mask config: expected a MaskConfigPair, got {type(config).__name__}")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise MaskingError(f"mask length must be a non-negative integer, got {length!r}")
        prng = Prng(self.value)
        unit = MaskUnit(config.unit, prng.integer(config.unit.order))
        vect = MaskVect(config.vect, tuple(prng.integers(config.vect.order, length)))
        return MaskObject(vect, unit)
