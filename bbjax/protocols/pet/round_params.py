"""A round's public parameters (xaynet ``RoundParameters``), as the coordinator serves them.

The byte form is bbjax's own (xaynet serves bincode), 92 bytes::

    0   pk            32  the round's coordinator X25519 public key
    32  sum            8  the sum probability, IEEE-754 binary64 little-endian
    40  update         8  the update probability, binary64 little-endian
    48  seed          32  the round seed
    80  vect config    4  MaskConfig bytes of the model mask
    84  unit config    4  MaskConfig bytes of the scalar mask
    88  model_length   4  u32 big-endian

Floats are little-endian as the round-seed chain signs them; integers big-endian as in
xaynet's messages.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from bbjax.errors import InvalidArgument, MaskingError, PetDecodeError
from bbjax.protocols.pet.config import MaskConfig, MaskConfigPair
from bbjax.protocols.pet.crypto import PUBLIC_KEY_LENGTH, SEED_LENGTH, check_bytes

ROUND_PARAMETERS_LENGTH = 92
_MAX_MODEL_LENGTH = 2**32 - 1


@dataclass(frozen=True)
class RoundParameters:
    """``pk`` (coordinator key), ``sum`` / ``update`` (selection probabilities, finite),
    ``seed`` (32 bytes), ``mask_config`` and ``model_length`` (a u32)."""

    pk: bytes
    sum: float
    update: float
    seed: bytes
    mask_config: MaskConfigPair
    model_length: int

    def __post_init__(self):
        object.__setattr__(self, "pk", check_bytes(self.pk, PUBLIC_KEY_LENGTH, "pk"))
        object.__setattr__(self, "seed", check_bytes(self.seed, SEED_LENGTH, "seed"))
        for name in ("sum", "update"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidArgument(f"RoundParameters.{name} must be a finite float, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.mask_config, MaskConfigPair):
            raise InvalidArgument(
                f"RoundParameters.mask_config must be a MaskConfigPair, got {self.mask_config!r}")
        length = self.model_length
        if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= _MAX_MODEL_LENGTH:
            raise InvalidArgument(
                f"RoundParameters.model_length must be an integer in [0, 2**32 - 1], got {length!r}")

    def to_bytes(self) -> bytes:
        """The 92-byte form (module docstring)."""
        return b"".join((
            self.pk, struct.pack("<dd", self.sum, self.update), self.seed,
            self.mask_config.vect.to_bytes(), self.mask_config.unit.to_bytes(),
            struct.pack(">I", self.model_length),
        ))

    @classmethod
    def from_bytes(cls, data: bytes) -> RoundParameters:
        """Parse the 92-byte form; anything else raises :class:`PetDecodeError`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise PetDecodeError(f"round parameters must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) != ROUND_PARAMETERS_LENGTH:
            raise PetDecodeError(
                f"round parameters are {ROUND_PARAMETERS_LENGTH} bytes, got {len(data)}")
        sum_prob, update_prob = struct.unpack("<dd", data[32:48])
        if not (math.isfinite(sum_prob) and math.isfinite(update_prob)):
            raise PetDecodeError(
                f"round parameters carry non-finite probabilities ({sum_prob}, {update_prob})")
        try:
            vect = MaskConfig.from_bytes(data[80:84])
        except MaskingError as e:
            raise PetDecodeError(f"round parameters vect config: {e}") from None
        try:
            unit = MaskConfig.from_bytes(data[84:88])
        except MaskingError as e:
            raise PetDecodeError(f"round parameters unit config: {e}") from None
        (model_length,) = struct.unpack(">I", data[88:92])
        return cls(data[:32], sum_prob, update_prob, data[48:80], MaskConfigPair(vect, unit),
                   model_length)
