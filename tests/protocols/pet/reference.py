"""Independent references for the PET masking tests, written straight from xaynet's code:
one candidate at a time over cryptography's raw ChaCha20 keystream, and Fractions for every
masking step."""

import math
from fractions import Fraction

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms


class KeystreamSampler:
    """rand_chacha's ChaCha20Rng + xaynet's generate_integer, one candidate at a time."""

    def __init__(self, seed: bytes):
        self._enc = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
        self._stream = b""
        self._pos = 0

    def _words(self, nbytes: int) -> bytes:
        used = -(-nbytes // 4) * 4  # whole 32-bit words, leftover bytes discarded
        while len(self._stream) - self._pos < used:
            self._stream += self._enc.update(bytes(4096))
        out = self._stream[self._pos : self._pos + nbytes]
        self._pos += used
        return out

    def integer(self, max_int: int) -> int:
        if max_int == 0:
            return 0
        nbytes = len(max_int.to_bytes((max_int.bit_length() + 7) // 8, "little"))
        while True:
            candidate = int.from_bytes(self._words(nbytes), "little")
            if candidate < max_int:
                return candidate


def reference_mask(vect, unit, seed: bytes, scalar: Fraction, weights: list[Fraction]):
    """xaynet's Masker::mask with Fractions: returns (vector elements, unit element)."""
    sampler = KeystreamSampler(seed)
    r0 = sampler.integer(unit.order)
    rs = [sampler.integer(vect.order) for _ in weights]
    s = min(scalar, unit.add_shift)
    b, e = vect.add_shift, vect.exp_shift
    data = []
    for w, r in zip(weights, rs):
        clamped = max(-b, min(b, s * w))
        data.append((math.floor((clamped + b) * e) + r) % vect.order)
    masked_s = (math.floor((s + unit.add_shift) * unit.exp_shift) + r0) % unit.order
    return data, masked_s


def reference_unmask(vect, unit, nb: int, masked: list[int], masked_s: int,
                     mask: list[int], mask_s: int) -> list[Fraction]:
    """xaynet's Aggregation::unmask with Fractions."""
    n1 = (masked_s + unit.order - mask_s) % unit.order
    scalar_sum = Fraction(n1) / unit.exp_shift - unit.add_shift * nb
    return [
        (Fraction((a + vect.order - m) % vect.order) / vect.exp_shift - vect.add_shift * nb)
        / scalar_sum
        for a, m in zip(masked, mask)
    ]


def mean_tolerance(vect, unit, nb: int, weighted_sum: Fraction, scalar_sum: Fraction) -> Fraction:
    """A bound on |unmasked - exact weighted mean|: each of the nb floors loses less than
    1/E in the weighted sum N and less than 1/E1 in the scalar sum S, so
    |N'/S' - N/S| <= (|N| nb / E1 + S nb / E) / (S (S - nb / E1))."""
    d_n, d_s = Fraction(nb, vect.exp_shift), Fraction(nb, unit.exp_shift)
    return (abs(weighted_sum) * d_s + scalar_sum * d_n) / (scalar_sum * (scalar_sum - d_s))
