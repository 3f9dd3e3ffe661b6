"""The coordinator's whole state as one value, and its canonical bytes.

:class:`CoordinatorState` holds what xaynet keeps in ``CoordinatorState`` and Redis: the
round's key pair, id and seed, the phase and when it began, the sum dictionary, the seed
dictionary and the update participants, the running aggregate of masked models, the mask
votes, the multipart buffers, and the latest global model. :meth:`CoordinatorState.to_bytes`
is canonical JSON (equal states give equal bytes); :meth:`CoordinatorState.from_bytes`
checks every field and its consistency and raises :class:`~bbjax.errors.PetDecodeError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from bbjax.errors import AggregationError, PetDecodeError
from bbjax.protocols.pet import _codec
from bbjax.protocols.pet.aggregation import Aggregation
from bbjax.protocols.pet.config import MaskConfigPair
from bbjax.protocols.pet.coordinator.outcomes import Phase
from bbjax.protocols.pet.crypto import (
    ENCRYPTED_MASK_SEED_LENGTH,
    PUBLIC_KEY_LENGTH,
    SECRET_KEY_LENGTH,
    SEED_LENGTH,
    EncryptKeyPair,
)
from bbjax.protocols.pet.multipart import Reassembler
from bbjax.protocols.pet.object import MaskObject
from bbjax.protocols.pet.settings import CoordinatorSettings

FORMAT = "bbjax.pet.coordinator/1"
PERSISTED_PHASES = (Phase.SUM, Phase.UPDATE, Phase.SUM2, Phase.SHUTDOWN)
"""The phases a state rests in between calls (Idle, Unmask and Failure pass within one)."""


def settings_digest(settings: CoordinatorSettings) -> bytes:
    """SHA-256 of the settings' canonical JSON: state bytes name the settings they run under."""
    text = json.dumps(settings.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).digest()


def restore_aggregation(config: MaskConfigPair, length: int, obj: MaskObject | None,
                        nb_models: int) -> Aggregation:
    """An :class:`Aggregation` holding ``obj`` as the sum of ``nb_models`` objects."""
    return Aggregation.resume(config, length, obj, nb_models)


@dataclasses.dataclass(eq=False)
class CoordinatorState:
    """Everything a coordinator knows between two calls.

    ``sum_dict`` maps sum participant pk -> ephemeral pk; ``seed_dict`` maps sum participant
    pk -> {update participant pk -> encrypted mask seed}; ``updaters`` are the update
    participants accepted; ``mask_votes`` maps a mask's bytes -> how many sum participants
    sent it, ``mask_senders`` are those who did. ``aggregation`` exists in the Update and
    Sum2 phases. ``now`` is the latest time the coordinator was given.
    """

    settings_digest: bytes
    phase: Phase
    round_id: int
    keys: EncryptKeyPair
    seed: bytes
    phase_start: float
    now: float
    reassembler: Reassembler
    sum_dict: dict[bytes, bytes] = dataclasses.field(default_factory=dict)
    seed_dict: dict[bytes, dict[bytes, bytes]] = dataclasses.field(default_factory=dict)
    updaters: set[bytes] = dataclasses.field(default_factory=set)
    aggregation: Aggregation | None = None
    mask_votes: dict[bytes, int] = dataclasses.field(default_factory=dict)
    mask_senders: set[bytes] = dataclasses.field(default_factory=set)
    global_model: np.ndarray | None = None

    def to_bytes(self) -> bytes:
        """The canonical bytes of this state."""
        agg = self.aggregation
        aggregate = None if agg is None else {
            "nb_models": agg.nb_models,
            "object": agg.masked_object().to_bytes().hex() if agg.nb_models else None,
        }
        model = self.global_model
        return _codec.dump({
            "format": FORMAT,
            "settings": self.settings_digest.hex(),
            "phase": self.phase.value,
            "round_id": self.round_id,
            "secret": self.keys.secret.hex(),
            "seed": self.seed.hex(),
            "phase_start": self.phase_start,
            "now": self.now,
            "sum_dict": _codec.sorted_pairs(self.sum_dict),
            "seed_dict": [[k.hex(), _codec.sorted_pairs(v)]
                          for k, v in sorted(self.seed_dict.items())],
            "updaters": sorted(pk.hex() for pk in self.updaters),
            "aggregate": aggregate,
            "mask_votes": _codec.sorted_pairs({m: n.to_bytes(8, "big")
                                               for m, n in self.mask_votes.items()}),
            "mask_senders": sorted(pk.hex() for pk in self.mask_senders),
            "multipart": self.reassembler.to_bytes().hex(),
            "global_model": (None if model is None
                             else np.asarray(model, "<f8").tobytes().hex()),
        })

    @classmethod
    def from_bytes(cls, data: bytes, settings: CoordinatorSettings) -> CoordinatorState:
        """The state :meth:`to_bytes` wrote under ``settings``; anything else raises
        :class:`PetDecodeError` naming the field."""
        f = _codec.load(data, "coordinator", FORMAT)
        digest = f.bytes("settings", 32)
        try:
            phase = Phase(f.str("phase"))
        except ValueError:
            raise f.fail("phase", f"unknown phase {f.obj['phase']!r}") from None
        if phase not in PERSISTED_PHASES:
            raise f.fail("phase", f"{phase.value} is never saved")
        round_id = f.int("round_id", 1)
        keys = EncryptKeyPair.from_secret(f.bytes("secret", SECRET_KEY_LENGTH))
        seed = f.bytes("seed", SEED_LENGTH)
        phase_start, now = f.float("phase_start"), f.float("now")
        if phase_start > now:
            raise f.fail("phase_start", "after now")
        sum_dict = _codec.pairs(f.list("sum_dict"), "coordinator.sum_dict",
                                PUBLIC_KEY_LENGTH, PUBLIC_KEY_LENGTH)
        seed_dict: dict[bytes, dict[bytes, bytes]] = {}
        for i, item in enumerate(f.list("seed_dict")):
            where = f"coordinator.seed_dict[{i}]"
            if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], list):
                raise PetDecodeError(f"{where}: expected [sum_pk, [[update_pk, seed], ...]]")
            key = _codec.to_bytes(item[0], where, PUBLIC_KEY_LENGTH)
            if seed_dict and key <= next(reversed(seed_dict)):
                raise PetDecodeError(f"{where}: keys not strictly increasing")
            seed_dict[key] = _codec.pairs(item[1], where, PUBLIC_KEY_LENGTH,
                                          ENCRYPTED_MASK_SEED_LENGTH)
        updaters = _pk_set(f.list("updaters"), "coordinator.updaters")
        mask_senders = _pk_set(f.list("mask_senders"), "coordinator.mask_senders")
        votes = {mask: int.from_bytes(n, "big") for mask, n in _codec.pairs(
            f.list("mask_votes"), "coordinator.mask_votes", None, 8).items()}
        try:
            reassembler = Reassembler.from_bytes(f.bytes("multipart"))
        except PetDecodeError as err:
            raise f.fail("multipart", str(err)) from None
        model = f.bytes("global_model", optional=True)
        if model is not None:
            if len(model) != 8 * settings.model_length:
                raise f.fail("global_model", f"expected {settings.model_length} float64s")
            model = np.frombuffer(model, "<f8").astype(np.float64)
        aggregation = _aggregation_from(f.object("aggregate", optional=True), settings)
        f.done("format", "settings", "phase", "round_id", "secret", "seed", "phase_start",
               "now", "sum_dict", "seed_dict", "updaters", "aggregate", "mask_votes",
               "mask_senders", "multipart", "global_model")
        state = cls(digest, phase, round_id, keys, seed, phase_start, now, reassembler,
                    sum_dict, seed_dict, updaters, aggregation, votes, mask_senders, model)
        _check_consistent(state)
        return state


def _pk_set(items: list, where: str) -> set[bytes]:
    keys = [_codec.to_bytes(v, f"{where}[{i}]", PUBLIC_KEY_LENGTH) for i, v in enumerate(items)]
    if keys != sorted(set(keys)):
        raise PetDecodeError(f"{where}: keys not strictly increasing")
    return set(keys)


def _aggregation_from(f: _codec.Fields | None, settings: CoordinatorSettings
                      ) -> Aggregation | None:
    if f is None:
        return None
    nb_models = f.int("nb_models")
    raw = f.bytes("object", optional=True)
    f.done("nb_models", "object")
    if (raw is None) != (nb_models == 0):
        raise f.fail("object", "present exactly when nb_models > 0")
    config = MaskConfigPair.from_config(settings.mask)
    obj = None
    if raw is not None:
        try:
            obj = MaskObject.from_bytes(raw)
        except PetDecodeError as err:
            raise f.fail("object", str(err)) from None
    if nb_models > config.vect.max_nb_models:
        raise f.fail("nb_models", f"above the configuration's {config.vect.max_nb_models}")
    try:
        return restore_aggregation(config, settings.model_length, obj, nb_models)
    except AggregationError as err:
        raise f.fail("object", str(err)) from None


def _check_consistent(s: CoordinatorState) -> None:
    def fail(why: str) -> PetDecodeError:
        return PetDecodeError(f"coordinator state ({s.phase.value} phase): {why}")

    in_update_or_later = s.phase in (Phase.UPDATE, Phase.SUM2)
    if (s.aggregation is not None) != in_update_or_later:
        raise fail("an aggregate belongs to the Update and Sum2 phases only")
    if in_update_or_later:
        if set(s.seed_dict) != set(s.sum_dict) or not s.sum_dict:
            raise fail("the seed dict's columns are not the sum participants")
        if any(set(column) != s.updaters for column in s.seed_dict.values()):
            raise fail("a seed dict column does not list every update participant")
        if s.aggregation.nb_models != len(s.updaters):
            raise fail("the aggregate does not count the update participants")
    elif s.seed_dict or s.updaters:
        raise fail("seeds and update participants belong to the Update and Sum2 phases")
    if s.phase is Phase.SUM2:
        if sum(s.mask_votes.values()) != len(s.mask_senders) or 0 in s.mask_votes.values():
            raise fail("the mask votes do not count the mask senders")
        if not s.mask_senders <= set(s.sum_dict):
            raise fail("a mask sender is not a sum participant")
    elif s.mask_votes or s.mask_senders:
        raise fail("mask votes belong to the Sum2 phase")
