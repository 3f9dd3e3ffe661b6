"""Where a served coordinator keeps what must survive a crash (xaynet's Redis store).

A :class:`CoordinatorStore` applies a coordinator's effects
(:meth:`bbjax.protocols.pet.Coordinator.take_effects`) in one transaction per call, and
loads them back as a :class:`StoredCoordinator`: the round's id, seed and phase, the sum
dictionary, the seed dictionary, the mask votes and the latest global model.
:func:`restore_coordinator` starts a new round from the latest global model, as xaynet does
on restart. :func:`open_store` opens one by URL: ``sqlite:///PATH`` (the default, stdlib
``sqlite3`` in WAL mode), ``redis://HOST:PORT/DB`` (redis-py) or ``memory:``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from bbjax.errors import ConfigError, StoreError
from bbjax.protocols.pet.coordinator import (
    Coordinator,
    Effect,
    MaskAdded,
    ModelUnmasked,
    Phase,
    PhaseStarted,
    RoundStarted,
    SumAdded,
    UpdateAdded,
)
from bbjax.protocols.pet.coordinator.state import settings_digest
from bbjax.protocols.pet.crypto import EncryptKeyPair
from bbjax.protocols.pet.settings import CoordinatorSettings


@dataclasses.dataclass(eq=False)
class StoredCoordinator:
    """What a store holds. ``round_id``, ``seed`` and ``phase`` are the round in progress;
    ``sum_dict`` (sum pk -> ephemeral pk), ``seed_dict`` (sum pk -> {update pk -> encrypted
    seed}) and ``masks`` (sum pk -> the mask it voted for) are that round's;
    ``global_model`` is the latest one, unmasked in round ``model_round``."""

    settings_digest: bytes
    round_id: int
    seed: bytes
    phase: Phase
    sum_dict: dict[bytes, bytes] = dataclasses.field(default_factory=dict)
    seed_dict: dict[bytes, dict[bytes, bytes]] = dataclasses.field(default_factory=dict)
    masks: dict[bytes, bytes] = dataclasses.field(default_factory=dict)
    global_model: np.ndarray | None = None
    model_round: int | None = None

    def mask_votes(self) -> dict[bytes, int]:
        """Each mask's number of votes."""
        votes: dict[bytes, int] = {}
        for mask in self.masks.values():
            votes[mask] = votes.get(mask, 0) + 1
        return votes

    def apply(self, effects: Sequence[Effect]) -> None:
        """Apply ``effects`` in order (the reference semantics every store implements)."""
        for e in effects:
            if isinstance(e, RoundStarted):
                self.round_id, self.seed, self.phase = e.round_id, e.seed, Phase.SUM
                self.sum_dict, self.seed_dict, self.masks = {}, {}, {}
            elif isinstance(e, PhaseStarted):
                self.phase = e.phase
            elif isinstance(e, SumAdded):
                self.sum_dict[e.participant_pk] = e.ephm_pk
            elif isinstance(e, UpdateAdded):
                for sum_pk, seed in e.local_seed_dict.items():
                    self.seed_dict.setdefault(sum_pk, {})[e.participant_pk] = seed
            elif isinstance(e, MaskAdded):
                self.masks[e.participant_pk] = e.mask
            elif isinstance(e, ModelUnmasked):
                self.global_model = np.array(e.model, dtype=np.float64)
                self.model_round = e.round_id
            else:
                raise StoreError(f"not a coordinator effect: {e!r}")


class CoordinatorStore(Protocol):
    """A coordinator's persistence: one transaction per :meth:`apply`."""

    def apply(self, settings: CoordinatorSettings, effects: Sequence[Effect]) -> None:
        """Durably apply ``effects`` (all or none) for a coordinator under ``settings``."""

    def load(self, settings: CoordinatorSettings) -> StoredCoordinator | None:
        """What was stored (``None`` if empty); :class:`StoreError` if it was stored under
        other settings or is damaged."""

    def clear(self) -> None:
        """Forget everything."""

    def close(self) -> None:
        """Release connections and files."""


class MemoryStore:
    """A store in this process's memory (tests; nothing survives the process)."""

    def __init__(self) -> None:
        self._stored: StoredCoordinator | None = None

    def apply(self, settings: CoordinatorSettings, effects: Sequence[Effect]) -> None:
        if not effects:
            return
        stored = self._stored
        if stored is None:
            first = effects[0]
            if not isinstance(first, RoundStarted):
                raise StoreError("an empty store must begin with a RoundStarted effect")
            stored = StoredCoordinator(settings_digest(settings), first.round_id, first.seed,
                                       Phase.SUM)
        elif stored.settings_digest != settings_digest(settings):
            raise StoreError("the store holds a coordinator of other settings")
        copy = dataclasses.replace(stored, sum_dict=dict(stored.sum_dict),
                                   seed_dict={k: dict(v) for k, v in stored.seed_dict.items()},
                                   masks=dict(stored.masks))
        copy.apply(effects)
        self._stored = copy

    def load(self, settings: CoordinatorSettings) -> StoredCoordinator | None:
        if self._stored is not None and self._stored.settings_digest != settings_digest(settings):
            raise StoreError("the store holds a coordinator of other settings")
        return self._stored

    def clear(self) -> None:
        self._stored = None

    def close(self) -> None:
        pass


def open_store(url: str) -> CoordinatorStore:
    """The store at ``url``: ``sqlite:///PATH``, ``redis://HOST:PORT/DB`` or ``memory:``;
    :class:`ConfigError` for another scheme."""
    if not isinstance(url, str):
        raise ConfigError(f"store.url must be a string, got {url!r}")
    if url == "memory:":
        return MemoryStore()
    if url.startswith("sqlite:///"):
        from bbjax.deploy.pet.sqlite_store import SqliteStore

        return SqliteStore(url[len("sqlite:///"):])
    if url.startswith("redis://"):
        from bbjax.deploy.pet.redis_store import RedisStore

        return RedisStore(url)
    raise ConfigError(f"store.url {url!r}: expected sqlite:///PATH, redis://HOST:PORT/DB "
                      "or memory:")


def restore_coordinator(store: CoordinatorStore, settings: CoordinatorSettings, now: float,
                        *, keygen=EncryptKeyPair.generate) -> Coordinator:
    """A coordinator continuing ``store``: a new round after the stored one, from the latest
    global model and the stored seed (a fresh coordinator if the store is empty). Its first
    effects are applied to the store before it is returned."""
    stored = store.load(settings)
    if stored is None:
        coordinator = Coordinator(settings, now, keygen=keygen)
    else:
        if stored.global_model is not None and stored.global_model.shape != (
                settings.model_length,):
            raise StoreError(f"the stored global model has shape {stored.global_model.shape}, "
                             f"not ({settings.model_length},)")
        coordinator = Coordinator(settings, now, keygen=keygen, initial_seed=stored.seed,
                                  round_id=stored.round_id + 1,
                                  global_model=stored.global_model)
    store.apply(settings, coordinator.take_effects())
    return coordinator
