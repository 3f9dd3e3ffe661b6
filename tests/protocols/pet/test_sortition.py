"""Sortition: xaynet's eligibility vectors, an independent integer formulation of the rule,
the exact float boundary, and task selection / verification."""

import math
import random
from fractions import Fraction

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bbjax.errors import InvalidArgument, PetCryptoError
from bbjax.protocols.pet.config import MaskConfig, MaskConfigPair
from bbjax.protocols.pet.crypto import EncryptKeyPair, SigningKeyPair, sha256
from bbjax.protocols.pet.round_params import RoundParameters
from bbjax.protocols.pet.sortition import (
    is_eligible,
    select_task,
    sum_signature,
    update_signature,
    verify_task,
)

# xaynet-core crypto/sign.rs test_signature_is_eligible
ELIGIBLE = bytes([
    172, 29, 85, 219, 118, 44, 107, 32, 219, 253, 25, 242, 53, 45, 111, 62, 102, 130, 24,
    8, 222, 199, 34, 120, 166, 163, 223, 229, 100, 50, 252, 244, 250, 88, 196, 151, 136,
    48, 39, 198, 166, 86, 29, 151, 13, 81, 69, 198, 40, 148, 134, 126, 7, 202, 1, 56, 174,
    43, 89, 28, 242, 194, 4, 0,
])
INELIGIBLE = bytes([
    119, 2, 197, 174, 52, 165, 229, 22, 218, 210, 240, 188, 220, 232, 149, 129, 211, 13,
    61, 217, 186, 79, 102, 15, 109, 237, 83, 193, 12, 117, 210, 66, 99, 230, 30, 131, 63,
    108, 28, 222, 48, 92, 153, 71, 159, 220, 115, 181, 183, 155, 146, 182, 205, 89, 140,
    234, 100, 40, 199, 248, 23, 147, 172, 0,
])


def _reference(signature: bytes, threshold: float) -> bool:
    # h / (2^256 - 1) <= n / d  <=>  h * d <= n * (2^256 - 1), all in exact integers
    if threshold < 0:
        return False
    if threshold > 1:
        return True
    n, d = threshold.as_integer_ratio()
    h = int.from_bytes(sha256(signature), "little")
    return h * d <= n * (2**256 - 1)


def _params(sum_prob, update_prob, seed=bytes(32)):
    pair = MaskConfigPair.from_config(MaskConfig("Prime", "F32", "B0", "M3"))
    return RoundParameters(EncryptKeyPair.generate().public, sum_prob, update_prob, seed, pair, 4)


def test_xaynet_eligibility_vectors():
    assert is_eligible(ELIGIBLE, 0.5)
    assert not is_eligible(INELIGIBLE, 0.5)


def test_rule_matches_an_integer_reference_on_random_signatures():
    rng = random.Random(1)
    for _ in range(500):
        signature, threshold = rng.randbytes(64), rng.random()
        assert is_eligible(signature, threshold) == _reference(signature, threshold)


def test_the_float_boundary_is_exact():
    rng = random.Random(2)
    for _ in range(200):
        signature = rng.randbytes(64)
        exact = Fraction(int.from_bytes(sha256(signature), "little"), 2**256 - 1)
        t = float(exact)  # the nearest float, on either side of the exact ratio
        assert is_eligible(signature, t) == (Fraction(t) >= exact)
        assert is_eligible(signature, math.nextafter(t, 2.0))
        assert not is_eligible(signature, math.nextafter(t, -1.0))


def test_edge_thresholds_follow_xaynet():
    rng = random.Random(4)
    for signature in (ELIGIBLE, INELIGIBLE, rng.randbytes(64)):
        assert is_eligible(signature, 1.0) and is_eligible(signature, 1.5)
        assert is_eligible(signature, math.inf) and is_eligible(signature, 2)
        assert not is_eligible(signature, 0.0) and not is_eligible(signature, -0.0)
        assert not is_eligible(signature, -1e-300) and not is_eligible(signature, -math.inf)
    with pytest.raises(InvalidArgument, match="nan"):
        is_eligible(ELIGIBLE, math.nan)
    with pytest.raises(InvalidArgument, match="threshold must be a float"):
        is_eligible(ELIGIBLE, "0.5")
    with pytest.raises(PetCryptoError, match="signature must be 64 bytes, got 63"):
        is_eligible(ELIGIBLE[:63], 0.5)


def test_eligible_fraction_tracks_the_threshold():
    rng = random.Random(5)
    signatures = [rng.randbytes(64) for _ in range(4000)]
    for threshold in (0.1, 0.5, 0.9):
        share = sum(is_eligible(s, threshold) for s in signatures) / len(signatures)
        # binomial standard deviation <= 0.0079 at n = 4000; 5 sigma
        assert abs(share - threshold) < 0.04


def test_task_signatures_sign_the_seed_and_the_word():
    seed = random.Random(6).randbytes(32)
    raw = random.Random(7).randbytes(32)
    keys, reference = SigningKeyPair.from_seed(raw), Ed25519PrivateKey.from_private_bytes(raw)
    assert sum_signature(keys, seed) == reference.sign(seed + b"sum")
    assert update_signature(keys, seed) == reference.sign(seed + b"update")
    with pytest.raises(PetCryptoError, match="round seed must be 32 bytes"):
        sum_signature(keys, seed[:8])


def test_select_task_gives_sum_precedence():
    rng = random.Random(8)
    seed = rng.randbytes(32)
    population = [SigningKeyPair.from_seed(rng.randbytes(32)) for _ in range(60)]
    assert all(select_task(k, _params(1.0, 1.0, seed)) == "sum" for k in population)
    assert all(select_task(k, _params(0.0, 1.0, seed)) == "update" for k in population)
    assert all(select_task(k, _params(0.0, 0.0, seed)) is None for k in population)
    params = _params(0.3, 0.6, seed)
    for keys in population:
        is_sum = _reference(sum_signature(keys, seed), 0.3)
        is_update = _reference(update_signature(keys, seed), 0.6)
        expected = "sum" if is_sum else "update" if is_update else None
        assert select_task(keys, params) == expected


def test_verify_task_is_the_coordinators_check():
    rng = random.Random(9)
    seed = rng.randbytes(32)
    population = [SigningKeyPair.from_seed(rng.randbytes(32)) for _ in range(40)]
    params = _params(0.4, 0.7, seed)
    seen = set()
    for keys in population:
        s, u = sum_signature(keys, seed), update_signature(keys, seed)
        task = select_task(keys, params)
        seen.add(task)
        assert verify_task(keys.public, s, u, params) == task
        # a Sum / Sum2 message carries no update signature
        assert verify_task(keys.public, s, None, params) == (task if task == "sum" else None)
        # another participant's signatures, another round's seed, swapped words
        other = population[0] if keys is not population[0] else population[1]
        assert verify_task(other.public, s, u, params) is None
        assert verify_task(keys.public, sum_signature(keys, bytes(32)), u, params) is None
        assert verify_task(keys.public, u, s, params) is None
    assert seen == {"sum", "update", None}


def test_verify_task_rejects_an_updater_hiding_its_sum_eligibility():
    rng = random.Random(10)
    seed = rng.randbytes(32)
    params = _params(0.5, 1.0, seed)
    summer = next(k for k in (SigningKeyPair.from_seed(rng.randbytes(32)) for _ in range(100))
                 if select_task(k, params) == "sum")
    garbage = rng.randbytes(64)
    # xaynet would take this participant as an updater; bbjax asks for a valid sum signature
    assert verify_task(summer.public, garbage, update_signature(summer, seed), params) is None
    assert verify_task(summer.public, sum_signature(summer, seed),
                       update_signature(summer, seed), params) == "sum"
