"""A :class:`~bbjax.deploy.pet.store.CoordinatorStore` in one SQLite file (stdlib ``sqlite3``).

WAL journal, ``synchronous=NORMAL``: a committed :meth:`SqliteStore.apply` survives the
process being killed. Tables: ``meta`` (one row: settings digest, round id, seed, phase,
model round), ``sum_dict``, ``seed_dict``, ``masks`` (the round's) and ``global_model``
(one row, float64 little-endian bytes). The file is marked with SQLite's ``application_id``.
"""

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

APPLICATION_ID = 0x62626A70  # "bbjp"

_SCHEMA = """
CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1), digest BLOB NOT NULL,
                   round_id INTEGER NOT NULL, seed BLOB NOT NULL, phase TEXT NOT NULL,
                   model_round INTEGER);
CREATE TABLE sum_dict (pk BLOB PRIMARY KEY, ephm BLOB NOT NULL);
CREATE TABLE seed_dict (sum_pk BLOB NOT NULL, update_pk BLOB NOT NULL, seed BLOB NOT NULL,
                        PRIMARY KEY (sum_pk, update_pk));
CREATE TABLE masks (sum_pk BLOB PRIMARY KEY, mask BLOB NOT NULL);
CREATE TABLE global_model (id INTEGER PRIMARY KEY CHECK (id = 1), model BLOB NOT NULL);
"""


class SqliteStore:
    """The store in the SQLite file at ``path`` (created if missing); :class:`StoreError` if
    it cannot be opened or is not a bbjax coordinator store. One thread at a time."""

    def __init__(self, path: str):
        self.path = str(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as err:
            raise StoreError(f"cannot open the SQLite store {self.path!r}: {err}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._init_schema()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            self._db.close()
            raise StoreError(f"cannot open the SQLite store {self.path!r}: {err}") from None
        except StoreError:
            self._db.close()
            raise

    def _init_schema(self) -> None:
        (app_id,) = self._db.execute("PRAGMA application_id").fetchone()
        if app_id == APPLICATION_ID:
            return
        (tables,) = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if app_id != 0 or tables:
            raise StoreError(f"{self.path!r} is an SQLite database but not a bbjax "
                             "coordinator store")
        for statement in filter(str.strip, _SCHEMA.split(";")):
            self._db.execute(statement)
        self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def apply(self, settings: CoordinatorSettings, effects: Sequence[Effect]) -> None:
        """Apply ``effects`` in one transaction (all or none)."""
        if not effects:
            return
        digest = settings_digest(settings)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._apply(digest, effects)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise StoreError(f"cannot write the SQLite store {self.path!r}: {err}") from None

    def _apply(self, digest: bytes, effects: Sequence[Effect]) -> None:
        db = self._db
        row = db.execute("SELECT digest FROM meta").fetchone()
        if row is None:
            if not isinstance(effects[0], RoundStarted):
                raise StoreError("an empty store must begin with a RoundStarted effect")
            first = effects[0]
            db.execute("INSERT INTO meta VALUES (1, ?, ?, ?, ?, NULL)",
                       (digest, first.round_id, first.seed, Phase.SUM.value))
        elif row[0] != digest:
            raise StoreError("the store holds a coordinator of other settings")
        for e in effects:
            if isinstance(e, RoundStarted):
                db.execute("UPDATE meta SET round_id = ?, seed = ?, phase = ?",
                           (e.round_id, e.seed, Phase.SUM.value))
                for table in ("sum_dict", "seed_dict", "masks"):
                    db.execute(f"DELETE FROM {table}")
            elif isinstance(e, PhaseStarted):
                db.execute("UPDATE meta SET phase = ?", (e.phase.value,))
            elif isinstance(e, SumAdded):
                db.execute("INSERT OR REPLACE INTO sum_dict VALUES (?, ?)",
                           (e.participant_pk, e.ephm_pk))
            elif isinstance(e, UpdateAdded):
                db.executemany("INSERT OR REPLACE INTO seed_dict VALUES (?, ?, ?)",
                               [(sum_pk, e.participant_pk, seed)
                                for sum_pk, seed in e.local_seed_dict.items()])
            elif isinstance(e, MaskAdded):
                db.execute("INSERT OR REPLACE INTO masks VALUES (?, ?)",
                           (e.participant_pk, e.mask))
            elif isinstance(e, ModelUnmasked):
                model = np.asarray(e.model, dtype="<f8").tobytes()
                db.execute("INSERT OR REPLACE INTO global_model VALUES (1, ?)", (model,))
                db.execute("UPDATE meta SET model_round = ?", (e.round_id,))
            else:
                raise StoreError(f"not a coordinator effect: {e!r}")

    def load(self, settings: CoordinatorSettings) -> StoredCoordinator | None:
        """What was stored (``None`` if empty)."""
        try:
            self._db.execute("BEGIN")
            try:
                return self._load(settings)
            finally:
                self._db.execute("COMMIT")
        except sqlite3.Error as err:
            raise StoreError(f"cannot read the SQLite store {self.path!r}: {err}") from None

    def _load(self, settings: CoordinatorSettings) -> StoredCoordinator | None:
        db = self._db
        row = db.execute("SELECT digest, round_id, seed, phase, model_round FROM meta"
                         ).fetchone()
        if row is None:
            return None
        digest, round_id, seed, phase, model_round = row
        if digest != settings_digest(settings):
            raise StoreError("the store holds a coordinator of other settings")
        try:
            phase = Phase(phase)
        except ValueError:
            raise StoreError(f"the store {self.path!r} holds an unknown phase {phase!r}"
                             ) from None
        stored = StoredCoordinator(digest, round_id, seed, phase, model_round=model_round)
        stored.sum_dict = dict(db.execute("SELECT pk, ephm FROM sum_dict"))
        for sum_pk, update_pk, s in db.execute("SELECT sum_pk, update_pk, seed FROM seed_dict"):
            stored.seed_dict.setdefault(sum_pk, {})[update_pk] = s
        stored.masks = dict(db.execute("SELECT sum_pk, mask FROM masks"))
        model = db.execute("SELECT model FROM global_model").fetchone()
        if (model is None) != (model_round is None) or (
                model is not None and len(model[0]) % 8):
            raise StoreError(f"the store {self.path!r} holds a damaged global model")
        if model is not None:
            stored.global_model = np.frombuffer(model[0], dtype="<f8").astype(np.float64)
        return stored

    def clear(self) -> None:
        """Forget everything (the schema stays)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for table in ("meta", "sum_dict", "seed_dict", "masks", "global_model"):
                self._db.execute(f"DELETE FROM {table}")
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            raise StoreError(f"cannot clear the SQLite store {self.path!r}: {err}") from None

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
