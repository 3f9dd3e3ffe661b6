"""The bodies of the coordinator's REST API (``docs/deploy.md``).

- ``GET /params``: :meth:`RoundParameters.to_bytes` (92 bytes).
- ``GET /sums``: a u32 big-endian count, then (sum pk 32 | ephemeral pk 32) per sum
  participant, sorted by pk; 204 with no body when there is no sum dictionary.
- ``GET /seeds?pk=HEX``: a u32 count, then (update pk 32 | encrypted seed 80), sorted;
  204 when there are none for that pk.
- ``GET /model``: u64 big-endian round id, then the global model as little-endian
  float64s; 204 before the first.
"""

from __future__ import annotations

import numpy as np

from bbjax.errors import PetDecodeError
from bbjax.protocols.pet.crypto import ENCRYPTED_MASK_SEED_LENGTH, PUBLIC_KEY_LENGTH


def encode_pairs(pairs: dict[bytes, bytes]) -> bytes:
    """Sorted ``key | value`` pairs after a u32 count."""
    return len(pairs).to_bytes(4, "big") + b"".join(k + v for k, v in sorted(pairs.items()))


def decode_pairs(data: bytes, key_length: int, value_length: int, what: str) -> dict[bytes, bytes]:
    """What :func:`encode_pairs` wrote, checked: :class:`PetDecodeError` naming ``what``."""
    if len(data) < 4:
        raise PetDecodeError(f"{what}: {len(data)} bytes, no count")
    count, item = int.from_bytes(data[:4], "big"), key_length + value_length
    if len(data) != 4 + count * item:
        raise PetDecodeError(f"{what}: {len(data)} bytes for {count} entries of {item}")
    out = {}
    for i in range(count):
        at = 4 + i * item
        key = bytes(data[at:at + key_length])
        if out and key <= next(reversed(out)):
            raise PetDecodeError(f"{what}: keys not strictly increasing at entry {i}")
        out[key] = bytes(data[at + key_length:at + item])
    return out


def encode_sums(sums: dict[bytes, bytes]) -> bytes:
    return encode_pairs(sums)


def decode_sums(data: bytes) -> dict[bytes, bytes]:
    return decode_pairs(data, PUBLIC_KEY_LENGTH, PUBLIC_KEY_LENGTH, "sums")


def encode_seeds(seeds: dict[bytes, bytes]) -> bytes:
    return encode_pairs(seeds)


def decode_seeds(data: bytes) -> dict[bytes, bytes]:
    return decode_pairs(data, PUBLIC_KEY_LENGTH, ENCRYPTED_MASK_SEED_LENGTH, "seeds")


def encode_model(round_id: int, model: np.ndarray) -> bytes:
    return round_id.to_bytes(8, "big") + np.asarray(model, "<f8").tobytes()


def decode_model(data: bytes, length: int) -> tuple[int, np.ndarray]:
    """``(round_id, model)`` of a ``GET /model`` body for a model of ``length`` weights."""
    if len(data) != 8 + 8 * length:
        raise PetDecodeError(f"model: {len(data)} bytes, expected {8 + 8 * length}")
    return int.from_bytes(data[:8], "big"), np.frombuffer(data[8:], "<f8").copy()
