"""xaynet's mask PRNG: rand_chacha's ``ChaCha20Rng::from_seed`` and ``generate_integer``.

The keystream is pyca/cryptography's ChaCha20 keyed by the 32-byte seed with a 16-byte
all-zero nonce (block counter 0, stream 0), which is ``ChaCha20Rng``'s. Draws follow
rand_core 0.6's ``fill_bytes``: a draw of ``n`` bytes consumes ``ceil(n / 4)`` whole 32-bit
words of keystream and the bytes left over in the last word are discarded.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from bbjax.errors import MaskingError

SEED_BYTES = 32
_REFILL_BYTES = 1 << 16  # keystream fetched from cryptography at a time, at least
_BATCH_BYTES = 1 << 24  # keystream examined at once by a batched draw, at most


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise MaskingError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


class Prng:
    """rand_chacha's ``ChaCha20Rng::from_seed(seed)``: a deterministic stream of draws."""

    def __init__(self, seed: bytes):
        if not isinstance(seed, (bytes, bytearray, memoryview)) or len(seed) != SEED_BYTES:
            got = len(seed) if isinstance(seed, (bytes, bytearray, memoryview)) else seed
            raise MaskingError(f"PRNG seed must be {SEED_BYTES} bytes, got {got!r}")
        cipher = Cipher(algorithms.ChaCha20(bytes(seed), bytes(16)), mode=None)
        self._stream = cipher.encryptor()
        self._buffer = b""
        self._pos = 0

    def _ensure(self, n: int) -> None:
        """Have at least ``n`` unread keystream bytes in the buffer."""
        left = len(self._buffer) - self._pos
        if left < n:
            fresh = self._stream.update(bytes(max(n - left, _REFILL_BYTES)))
            self._buffer = self._buffer[self._pos :] + fresh
            self._pos = 0

    def fill_bytes(self, n: int) -> bytes:
        """The next ``n`` random bytes, consuming ``ceil(n / 4)`` keystream words."""
        n = _check_count("fill_bytes length", n)
        used = -(-n // 4) * 4
        self._ensure(used)
        out = self._buffer[self._pos : self._pos + n]
        self._pos += used
        return out

    def integer(self, max_int: int) -> int:
        """xaynet's ``generate_integer``: uniform in ``[0, max_int)`` (0 when ``max_int`` is 0).

        Draws ``len(max_int.to_bytes_le())`` bytes, read little-endian, until one is below
        ``max_int``.
        """
        max_int = _check_count("max_int", max_int)
        if max_int == 0:
            return 0
        nbytes = (max_int.bit_length() + 7) // 8
        while True:
            candidate = int.from_bytes(self.fill_bytes(nbytes), "little")
            if candidate < max_int:
                return candidate

    def integers(self, max_int: int, count: int) -> list[int]:
        """``count`` successive :meth:`integer` draws, computed over large keystream blocks."""
        max_int = _check_count("max_int", max_int)
        count = _check_count("count", count)
        if max_int == 0:
            return [0] * count
        nbytes = (max_int.bit_length() + 7) // 8
        stride = -(-nbytes // 4) * 4
        accept = float(Fraction(max_int, 1 << (8 * nbytes)))
        out: list[int] = []
        while len(out) < count:
            need = count - len(out)
            k = min(int(need / accept * 1.1) + 16, max(_BATCH_BYTES // stride, 1))
            self._ensure(k * stride)
            raw = np.frombuffer(self._buffer, np.uint8, k * stride, self._pos)
            candidates = raw.reshape(k, stride)[:, :nbytes]
            values, taken = _accepted(candidates, max_int, need)
            out.extend(values)
            self._pos += taken * stride
        return out


def _accepted(candidates: np.ndarray, max_int: int, need: int) -> tuple[list[int], int]:
    """The first ``need`` candidates (rows of little-endian bytes) below ``max_int``, and how
    many rows were used to find them (all rows when fewer are below)."""
    k, nbytes = candidates.shape
    limbs_n = -(-nbytes // 8)
    padded = np.zeros((k, 8 * limbs_n), np.uint8)
    padded[:, :nbytes] = candidates
    limbs = padded.view("<u8")
    below = np.zeros(k, bool)
    equal = np.ones(k, bool)
    for i in reversed(range(limbs_n)):
        bound = np.uint64((max_int >> (64 * i)) & (2**64 - 1))
        below |= equal & (limbs[:, i] < bound)
        equal &= limbs[:, i] == bound
    rows = np.flatnonzero(below)[:need]
    taken = int(rows[-1]) + 1 if len(rows) == need else k
    if limbs_n == 1:
        return limbs[rows, 0].tolist(), taken
    data = padded[rows].tobytes()
    width = 8 * limbs_n
    values = [int.from_bytes(data[j : j + width], "little") for j in range(0, len(data), width)]
    return values, taken
