"""Shared helpers of the PET state-machine tests: small settings, participants eligible for a
task, and sealed messages built by hand (independently of the Participant)."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np

from bbjax.protocols.pet.aggregation import Aggregation
from bbjax.protocols.pet.coordinator import Coordinator
from bbjax.protocols.pet.crypto import EncryptKeyPair, SigningKeyPair, encrypt_seed
from bbjax.protocols.pet.masking import Masker, MaskObject, MaskSeed
from bbjax.protocols.pet.message import Sum, Sum2, Update, seal_message
from bbjax.protocols.pet.multipart import encode_messages
from bbjax.protocols.pet.settings import (
    CoordinatorSettings,
    Count,
    Sum2Settings,
    SumSettings,
    Time,
    UpdateSettings,
)
from bbjax.protocols.pet.sortition import select_task, sum_signature, update_signature

LENGTH = 8


def settings(*, sum_count=(1, 50), update_count=(3, 100), sum2_count=(1, 50),
             time=(2.0, 20.0), sum_prob=0.4, update_prob=0.9, length=LENGTH
             ) -> CoordinatorSettings:
    """Small, fast settings: every phase takes ``time`` seconds (min, max)."""
    return CoordinatorSettings(
        SumSettings(sum_prob, Count(*sum_count), Time(*time)),
        UpdateSettings(update_prob, Count(*update_count), Time(*time)),
        Sum2Settings(Count(*sum2_count), Time(*time)), model_length=length)


def keygen(label: bytes = b"coordinator"):
    """Reproducible coordinator keys."""
    counter = itertools.count()
    return lambda: EncryptKeyPair.from_seed(
        hashlib.sha256(label + next(counter).to_bytes(8, "big")).digest())


def eligible(task: str, coordinator: Coordinator, count: int, label: bytes = b"k"
             ) -> list[SigningKeyPair]:
    """``count`` signing key pairs selected for ``task`` ("sum", "update" or None) in the
    coordinator's current round."""
    params = coordinator.round_params()
    found = []
    for i in itertools.count():
        keys = SigningKeyPair.from_seed(hashlib.sha256(label + i.to_bytes(8, "big")).digest())
        if select_task(keys, params) == task:
            found.append(keys)
            if len(found) == count:
                return found


def seal_all(payload, keys: SigningKeyPair, coordinator: Coordinator,
             max_message_size: int | None = None, pk: bytes | None = None) -> list[bytes]:
    """The payload's message(s) from ``keys``, sealed to the coordinator's round key (or
    ``pk``)."""
    pk = coordinator.round_params().pk if pk is None else pk
    return [seal_message(m, pk) for m in encode_messages(payload, keys, pk, max_message_size)]


def sum_payload(keys: SigningKeyPair, coordinator: Coordinator,
                ephm: EncryptKeyPair | None = None) -> tuple[Sum, EncryptKeyPair]:
    ephm = EncryptKeyPair.generate() if ephm is None else ephm
    return Sum(sum_signature(keys, coordinator.round_params().seed), ephm.public), ephm


def update_payload(keys: SigningKeyPair, coordinator: Coordinator, weights, scalar=1,
                   sums: dict[bytes, bytes] | None = None) -> tuple[Update, MaskSeed]:
    params = coordinator.round_params()
    sums = coordinator.sums() if sums is None else sums
    seed, masked = Masker(params.mask_config).mask(scalar, np.asarray(weights))
    seeds = {pk: encrypt_seed(seed, ephm) for pk, ephm in sums.items()}
    return Update(sum_signature(keys, params.seed), update_signature(keys, params.seed),
                  masked, seeds), seed


def mask_of(seeds: list[MaskSeed], coordinator: Coordinator) -> MaskObject:
    """The aggregated mask of the given mask seeds (what honest sum participants send)."""
    params = coordinator.round_params()
    aggregation = Aggregation(params.mask_config, params.model_length)
    for seed in seeds:
        aggregation.aggregate(seed.derive_mask(params.model_length, params.mask_config))
    return aggregation.masked_object()


def sum2_payload(keys: SigningKeyPair, coordinator: Coordinator, mask: MaskObject) -> Sum2:
    return Sum2(sum_signature(keys, coordinator.round_params().seed), mask)


def weighted_mean(models, scalars) -> np.ndarray:
    """The float64 reference ``sum_j s_j w_j / sum_j s_j`` of float32 models."""
    w = np.asarray([np.asarray(m, np.float32).astype(np.float64) for m in models])
    s = np.asarray([float(x) for x in scalars], np.float64)
    return (s[:, None] * w).sum(0) / s.sum()


def tolerance(coordinator: Coordinator, nb_models: int, scalar_sum: float,
              mean: np.ndarray) -> float:
    """How far the unmasked mean may be from the float64 reference: each of ``nb_models``
    fixed-point values (model and scalar) is floored to 1/E, then divided by the scalar
    sum; plus float64 rounding."""
    config = coordinator.settings.mask
    step = nb_models / config.exp_shift
    return 2 * step * (1 + float(np.abs(mean).max())) / (scalar_sum - step) + 1e-12
