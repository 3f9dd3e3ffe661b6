"""Task selection by signature, as xaynet's (``Signature::is_eligible``, the SDK's NewRound
phase and the coordinator's ``TaskValidator``).

A participant signs ``round_seed || b"sum"`` and ``round_seed || b"update"``; a signature
is eligible for a threshold ``t`` when ``int_le(sha256(signature)) / (2**256 - 1) <= t``,
compared exactly. Sum takes precedence: a participant eligible for both sums.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING, Literal

from bbjax.errors import InvalidArgument
from bbjax.protocols.pet.crypto import (
    SEED_LENGTH,
    SIGNATURE_LENGTH,
    SigningKeyPair,
    check_bytes,
    sha256,
    verify,
)

if TYPE_CHECKING:
    from bbjax.protocols.pet.round_params import RoundParameters

Task = Literal["sum", "update"]

_HASH_MAX = 2**256 - 1


def is_eligible(signature: bytes, threshold: float) -> bool:
    """Whether ``int_le(sha256(signature)) / (2**256 - 1) <= threshold``, exactly.

    As xaynet: a threshold below 0 is never met, one above 1 always (``inf`` included);
    otherwise the float's exact rational value is compared. ``nan`` (where xaynet panics)
    raises :class:`~bbjax.errors.InvalidArgument`.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise InvalidArgument(f"threshold must be a float, got {threshold!r}")
    if math.isnan(threshold):
        raise InvalidArgument("threshold must not be nan")
    signature = check_bytes(signature, SIGNATURE_LENGTH, "signature")
    if threshold < 0:
        return False
    if threshold > 1:
        return True
    digest = int.from_bytes(sha256(signature), "little")
    return Fraction(digest, _HASH_MAX) <= Fraction(threshold)


def sum_signature(keys: SigningKeyPair, round_seed: bytes) -> bytes:
    """``keys``' signature of ``round_seed || b"sum"``."""
    return keys.sign(check_bytes(round_seed, SEED_LENGTH, "round seed") + b"sum")


def update_signature(keys: SigningKeyPair, round_seed: bytes) -> bytes:
    """``keys``' signature of ``round_seed || b"update"``."""
    return keys.sign(check_bytes(round_seed, SEED_LENGTH, "round seed") + b"update")


def select_task(keys: SigningKeyPair, round_params: RoundParameters) -> Task | None:
    """The participant's task this round: ``"sum"`` if its sum signature is eligible for
    ``round_params.sum``, else ``"update"`` if its update signature is eligible for
    ``round_params.update``, else ``None``."""
    if is_eligible(sum_signature(keys, round_params.seed), round_params.sum):
        return "sum"
    if is_eligible(update_signature(keys, round_params.seed), round_params.update):
        return "update"
    return None


def verify_task(participant_pk: bytes, sum_sig: bytes, update_sig: bytes | None,
                round_params: RoundParameters) -> Task | None:
    """The task a message's signatures prove, checked as the coordinator does.

    ``"sum"`` if ``sum_sig`` is ``participant_pk``'s valid signature of ``seed || b"sum"``
    and eligible; else ``"update"`` if ``update_sig`` is its valid, eligible signature of
    ``seed || b"update"``; else ``None``. Sum and Sum2 messages need ``"sum"``, Update
    messages ``"update"`` (so an updater is never sum-eligible).

    One check stricter than xaynet's: an updater's ``sum_sig`` must be valid too. xaynet
    only asks it not to be an eligible valid one, so a sum-eligible participant could send
    a garbage sum signature and pass as an updater; an honest participant's (deterministic
    Ed25519) sum signature is always valid, so it loses nothing.
    """
    seed = check_bytes(round_params.seed, SEED_LENGTH, "round seed")
    if not verify(participant_pk, seed + b"sum", sum_sig):
        return None
    if is_eligible(sum_sig, round_params.sum):
        return "sum"
    if (update_sig is not None and verify(participant_pk, seed + b"update", update_sig)
            and is_eligible(update_sig, round_params.update)):
        return "update"
    return None
