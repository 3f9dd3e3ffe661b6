"""The coordinator's embedded store: one SQLite file (stdlib ``sqlite3``, WAL), one
transaction per :meth:`SqliteStore.apply`, replacing xaynet's Redis Lua scripts."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import numpy as np

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
from bbjax.protocols.pet.settings import CoordinatorSettings

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sum_dict (pk BLOB PRIMARY KEY, ephm BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS seed_dict (sum_pk BLOB, update_pk BLOB, seed BLOB NOT NULL,
                                      PRIMARY KEY (sum_pk, update_pk));
CREATE TABLE IF NOT EXISTS masks (sum_pk BLOB PRIMARY KEY, mask BLOB NOT NULL);
"""
_FORMAT = b"bbjax.pet.store/1"


class SqliteStore:
    """The store in the SQLite file ``path`` (created if missing)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            fmt = self._meta("format")
            if fmt is None:
                self._db.execute("INSERT INTO meta VALUES ('format', ?)", (_FORMAT,))
            elif fmt != _FORMAT:
                raise StoreError(f"{path}: a store of format {fmt!r}, not {_FORMAT!r}")
        except sqlite3.Error as err:
            raise StoreError(f"{path}: not a usable SQLite store: {err}") from None

    def _meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def _set(self, key: str, value: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def apply(self, settings: CoordinatorSettings, effects: Sequence[Effect]) -> None:
        if not effects:
            return
        digest = settings_digest(settings)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                stored = self._meta("settings")
                if stored is None:
                    if not isinstance(effects[0], RoundStarted):
                        raise StoreError("an empty store must begin with a RoundStarted effect")
                    self._set("settings", digest)
                elif stored != digest:
                    raise StoreError(f"{self.path} holds a coordinator of other settings")
                for e in effects:
                    self._write(e)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise StoreError(f"{self.path}: write failed: {err}") from None

    def _write(self, e: Effect) -> None:
        x = self._db.execute
        if isinstance(e, RoundStarted):
            for table in ("sum_dict", "seed_dict", "masks"):
                x(f"DELETE FROM {table}")
            self._set("round_id", str(e.round_id).encode())
            self._set("seed", e.seed)
            self._set("phase", Phase.SUM.value.encode())
        elif isinstance(e, PhaseStarted):
            self._set("phase", e.phase.value.encode())
        elif isinstance(e, SumAdded):
            x("INSERT OR REPLACE INTO sum_dict VALUES (?, ?)", (e.participant_pk, e.ephm_pk))
        elif isinstance(e, UpdateAdded):
            self._db.executemany("INSERT OR REPLACE INTO seed_dict VALUES (?, ?, ?)",
                                 [(s, e.participant_pk, seed)
                                  for s, seed in e.local_seed_dict.items()])
        elif isinstance(e, MaskAdded):
            x("INSERT OR REPLACE INTO masks VALUES (?, ?)", (e.participant_pk, e.mask))
        elif isinstance(e, ModelUnmasked):
            self._set("global_model", np.asarray(e.model, "<f8").tobytes())
            self._set("model_round", str(e.round_id).encode())
        else:
            raise StoreError(f"not a coordinator effect: {e!r}")

    def load(self, settings: CoordinatorSettings) -> StoredCoordinator | None:
        try:
            digest = self._meta("settings")
            if digest is None:
                return None
            if digest != settings_digest(settings):
                raise StoreError(f"{self.path} holds a coordinator of other settings")
            model = self._meta("global_model")
            model_round = self._meta("model_round")
            stored = StoredCoordinator(
                digest, int(self._meta("round_id")), self._meta("seed"),
                Phase(self._meta("phase").decode()),
                sum_dict={bytes(k): bytes(v) for k, v in
                          self._db.execute("SELECT pk, ephm FROM sum_dict ORDER BY pk")},
                masks={bytes(k): bytes(v) for k, v in
                       self._db.execute("SELECT sum_pk, mask FROM masks ORDER BY sum_pk")},
                global_model=None if model is None else np.frombuffer(model, "<f8").copy(),
                model_round=None if model_round is None else int(model_round))
            for sum_pk, update_pk, seed in self._db.execute(
                    "SELECT sum_pk, update_pk, seed FROM seed_dict ORDER BY sum_pk, update_pk"):
                stored.seed_dict.setdefault(bytes(sum_pk), {})[bytes(update_pk)] = bytes(seed)
            return stored
        except sqlite3.Error as err:
            raise StoreError(f"{self.path}: read failed: {err}") from None
        except (TypeError, ValueError, AttributeError) as err:
            raise StoreError(f"{self.path}: damaged store: {err}") from None

    def clear(self) -> None:
        try:
            self._db.executescript("BEGIN; DELETE FROM sum_dict; DELETE FROM seed_dict; "
                                   "DELETE FROM masks; DELETE FROM meta WHERE key != 'format'; "
                                   "COMMIT;")
        except sqlite3.Error as err:
            raise StoreError(f"{self.path}: clear failed: {err}") from None

    def close(self) -> None:
        self._db.close()
