"""SQLite persistence of a served node: its state bytes, unsent frames, the gate's replay
counters and the round counters, all changed in one transaction per commit."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

from bbjax.errors import StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS node_state (id INTEGER PRIMARY KEY CHECK (id = 0), data BLOB);
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, peer INTEGER, frame BLOB);
CREATE TABLE IF NOT EXISTS gate (sender INTEGER PRIMARY KEY, last_seq INTEGER);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER);
"""
META_KEYS = ("rounds_started", "rounds_done", "next_seq")


class NodeStore:
    """The node persisted at ``path`` (created if absent, WAL journal)."""

    def __init__(self, path: str | Path):
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise StoreError(f"node store {str(path)!r}: {e}") from e

    def state(self) -> bytes | None:
        """The saved node state bytes (None before the first commit)."""
        row = self._db.execute("SELECT data FROM node_state WHERE id = 0").fetchone()
        return None if row is None else bytes(row[0])

    def outbox(self) -> list[tuple[int, int, bytes]]:
        """Unsent frames as (seq, peer, frame), by seq."""
        return [(s, p, bytes(f)) for s, p, f in
                self._db.execute("SELECT seq, peer, frame FROM outbox ORDER BY seq")]

    def last_seq(self) -> dict[int, int]:
        """The gate's last admitted seq per sender."""
        return dict(self._db.execute("SELECT sender, last_seq FROM gate"))

    def meta(self) -> dict[str, int]:
        """``rounds_started``, ``rounds_done`` and ``next_seq`` (0, 0, 1 when new)."""
        saved = dict(self._db.execute("SELECT key, value FROM meta"))
        return {"rounds_started": 0, "rounds_done": 0, "next_seq": 1} | saved

    def commit(self, state_bytes: bytes, outbox_add: Iterable[tuple[int, int, bytes]] = (),
               outbox_remove: Iterable[int] = (), last_seq: Mapping[int, int] | None = None,
               meta: Mapping[str, int] | None = None) -> None:
        """Save the state, add and remove outbox rows, the gate's counters and ``meta``,
        atomically."""
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR REPLACE INTO node_state VALUES (0, ?)",
                                 (state_bytes,))
                self._db.executemany("INSERT INTO outbox VALUES (?, ?, ?)", outbox_add)
                self._db.executemany("DELETE FROM outbox WHERE seq = ?",
                                     [(s,) for s in outbox_remove])
                self._db.executemany("INSERT OR REPLACE INTO gate VALUES (?, ?)",
                                     list((last_seq or {}).items()))
                self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                     [(k, int(v)) for k, v in (meta or {}).items()])
        except sqlite3.Error as e:
            raise StoreError(f"node store commit: {e}") from e

    def remove(self, seq: int) -> None:
        """Delete the delivered frame ``seq`` from the outbox."""
        try:
            with self._db:
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
        except sqlite3.Error as e:
            raise StoreError(f"node store remove: {e}") from e

    def close(self) -> None:
        self._db.close()
