"""SQLite persistence of a served node: its state bytes, unsent frames, the gate's replay
counters, the round counters and the inbox, changed in one transaction per call.

The inbox is a write-ahead log of admitted envelopes: :meth:`NodeStore.log_inbound` keeps an
envelope (with the gate's counters) before the host acknowledges it, and the :meth:`commit`
of the state that took it in removes it. A restart loads the state and delivers the inbox
again, in order, so a large envelope is written once on arrival rather than with the whole
state."""

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
CREATE TABLE IF NOT EXISTS inbox (id INTEGER PRIMARY KEY AUTOINCREMENT, envelope BLOB);
"""
META_KEYS = ("rounds_started", "rounds_done", "next_seq")


class NodeStore:
    """The node persisted at ``path`` (created if absent, WAL journal)."""

    def __init__(self, path: str | Path):
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None)
            # large pages: states and frames are big blobs (halves a 200 MB commit's time);
            # it takes effect on a new file only, before the WAL switch
            self._db.execute("PRAGMA page_size=65536")
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

    def inbox(self) -> list[tuple[int, bytes]]:
        """Logged envelopes as (id, envelope), in arrival order."""
        return [(i, bytes(e)) for i, e in
                self._db.execute("SELECT id, envelope FROM inbox ORDER BY id")]

    def log_inbound(self, envelope: bytes, last_seq: Mapping[int, int]) -> int:
        """Log an admitted ``envelope`` with the gate's counters, atomically; its inbox id."""
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute("INSERT INTO inbox (envelope) VALUES (?)", (envelope,))
                self._set_seqs(last_seq)
                return int(row.lastrowid)
        except sqlite3.Error as e:
            raise StoreError(f"node store inbox: {e}") from e

    def commit(self, state_bytes: bytes, outbox_add: Iterable[tuple[int, int, bytes]] = (),
               outbox_remove: Iterable[int] = (), last_seq: Mapping[int, int] | None = None,
               meta: Mapping[str, int] | None = None, inbox_remove: Iterable[int] = ()) -> None:
        """Save the state, add and remove outbox rows, the gate's counters and ``meta``, and
        remove the inbox rows the state took in, atomically."""
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR REPLACE INTO node_state VALUES (0, ?)",
                                 (state_bytes,))
                self._db.executemany("INSERT INTO outbox VALUES (?, ?, ?)", outbox_add)
                self._db.executemany("DELETE FROM outbox WHERE seq = ?",
                                     [(s,) for s in outbox_remove])
                self._db.executemany("DELETE FROM inbox WHERE id = ?",
                                     [(i,) for i in inbox_remove])
                self._set_seqs(last_seq or {})
                self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                     [(k, int(v)) for k, v in (meta or {}).items()])
        except sqlite3.Error as e:
            raise StoreError(f"node store commit: {e}") from e

    def _set_seqs(self, last_seq: Mapping[int, int]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO gate VALUES (?, ?)", list(last_seq.items()))

    def close(self) -> None:
        self._db.close()
