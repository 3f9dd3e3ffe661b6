"""A :class:`~bbjax.deploy.pet.store.CoordinatorStore` in Redis (redis-py), as xaynet keeps it.

Keys under ``prefix`` (default ``bbjax:pet:``): ``meta`` (a hash: digest, round_id, seed,
phase, model_round), ``sum_dict`` (sum pk -> ephemeral pk), ``seed_dict`` (sum pk || update
pk -> encrypted seed), ``masks`` (sum pk -> mask) and ``global_model`` (float64
little-endian bytes). Each :meth:`RedisStore.apply` is one MULTI/EXEC transaction, watching
``meta``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import redis

from bbjax.deploy.pet.store import StoredCoordinator
from bbjax.errors import StoreError
from bbjax.protocols.pet.coordinator import (
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
from bbjax.protocols.pet.crypto import PUBLIC_KEY_LENGTH
from bbjax.protocols.pet.settings import CoordinatorSettings


class RedisStore:
    """The store in the Redis database at ``url`` (``redis://HOST:PORT/DB``);
    :class:`StoreError` naming the URL when Redis cannot be reached."""

    def __init__(self, url: str, *, prefix: str = "bbjax:pet:", timeout: float = 5.0):
        self.url = url
        try:
            self._redis = redis.Redis.from_url(url, socket_timeout=timeout,
                                               socket_connect_timeout=timeout)
            self._redis.ping()
        except (redis.RedisError, ValueError) as err:
            raise StoreError(f"cannot reach the Redis store {url}: {err}") from None
        self._keys = {name: f"{prefix}{name}" for name in
                      ("meta", "sum_dict", "seed_dict", "masks", "global_model")}

    def apply(self, settings: CoordinatorSettings, effects: Sequence[Effect]) -> None:
        """Apply ``effects`` in one MULTI/EXEC transaction (all or none)."""
        if not effects:
            return
        k = self._keys
        digest = settings_digest(settings)
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.watch(k["meta"])
                stored = pipe.hget(k["meta"], "digest")
                pipe.multi()
                if stored is None:
                    first = effects[0]
                    if not isinstance(first, RoundStarted):
                        raise StoreError("an empty store must begin with a RoundStarted effect")
                    pipe.hset(k["meta"], mapping={"digest": digest})
                elif stored != digest:
                    raise StoreError("the store holds a coordinator of other settings")
                for e in effects:
                    self._queue(pipe, e)
                pipe.execute()
        except redis.WatchError:
            raise StoreError(f"the Redis store {self.url} was changed by another writer"
                             ) from None
        except redis.RedisError as err:
            raise StoreError(f"cannot write the Redis store {self.url}: {err}") from None

    def _queue(self, pipe, e: Effect) -> None:
        k = self._keys
        if isinstance(e, RoundStarted):
            pipe.hset(k["meta"], mapping={"round_id": e.round_id, "seed": e.seed,
                                          "phase": Phase.SUM.value})
            pipe.delete(k["sum_dict"], k["seed_dict"], k["masks"])
        elif isinstance(e, PhaseStarted):
            pipe.hset(k["meta"], "phase", e.phase.value)
        elif isinstance(e, SumAdded):
            pipe.hset(k["sum_dict"], e.participant_pk, e.ephm_pk)
        elif isinstance(e, UpdateAdded):
            if e.local_seed_dict:
                pipe.hset(k["seed_dict"], mapping={sum_pk + e.participant_pk: seed for
                                                   sum_pk, seed in e.local_seed_dict.items()})
        elif isinstance(e, MaskAdded):
            pipe.hset(k["masks"], e.participant_pk, e.mask)
        elif isinstance(e, ModelUnmasked):
            pipe.set(k["global_model"], np.asarray(e.model, dtype="<f8").tobytes())
            pipe.hset(k["meta"], "model_round", e.round_id)
        else:
            raise StoreError(f"not a coordinator effect: {e!r}")

    def load(self, settings: CoordinatorSettings) -> StoredCoordinator | None:
        """What was stored (``None`` if empty)."""
        k = self._keys
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(k["meta"])
                pipe.hgetall(k["sum_dict"])
                pipe.hgetall(k["seed_dict"])
                pipe.hgetall(k["masks"])
                pipe.get(k["global_model"])
                meta, sums, seeds, masks, model = pipe.execute()
        except redis.RedisError as err:
            raise StoreError(f"cannot read the Redis store {self.url}: {err}") from None
        if not meta:
            return None
        if meta.get(b"digest") != settings_digest(settings):
            raise StoreError("the store holds a coordinator of other settings")
        try:
            stored = StoredCoordinator(
                meta[b"digest"], int(meta[b"round_id"]), meta[b"seed"],
                Phase(meta[b"phase"].decode()), sum_dict=sums, masks=masks,
                model_round=int(meta[b"model_round"]) if b"model_round" in meta else None)
        except (KeyError, ValueError, UnicodeDecodeError) as err:
            raise StoreError(f"the Redis store {self.url} is damaged: {err!r}") from None
        for key, seed in seeds.items():
            if len(key) != 2 * PUBLIC_KEY_LENGTH:
                raise StoreError(f"the Redis store {self.url} holds a damaged seed_dict")
            sum_pk, update_pk = key[:PUBLIC_KEY_LENGTH], key[PUBLIC_KEY_LENGTH:]
            stored.seed_dict.setdefault(sum_pk, {})[update_pk] = seed
        if (model is None) != (stored.model_round is None) or (
                model is not None and len(model) % 8):
            raise StoreError(f"the Redis store {self.url} holds a damaged global model")
        if model is not None:
            stored.global_model = np.frombuffer(model, dtype="<f8").astype(np.float64)
        return stored

    def clear(self) -> None:
        """Delete this store's keys."""
        try:
            self._redis.delete(*self._keys.values())
        except redis.RedisError as err:
            raise StoreError(f"cannot clear the Redis store {self.url}: {err}") from None

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()
