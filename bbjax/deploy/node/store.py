"""SQLite persistence of a served node: its state bytes, unsent frames, the gate's replay
counters, the round counters and the inbox, changed in one transaction per call.

The inbox is a write-ahead log of admitted envelopes: :meth:`NodeStore.log_inbound` keeps an
envelope (with the gate's counters) before the host acknowledges it, and the :meth:`commit`
of the state that took it in removes it. A restart loads the state and delivers the inbox
again, in order, so a large envelope is written once on arrival rather than with the whole
state. Values of a megabyte or more are files beside the SQLite file
(:mod:`bbjax.deploy.node.blobs`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

from bbjax.deploy.node.blobs import EXTERNAL_BYTES, BlobDir
from bbjax.errors import StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS node_state (id INTEGER PRIMARY KEY CHECK (id = 0), data BLOB,
                                       file TEXT);
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, peer INTEGER, frame BLOB,
                                   file TEXT);
CREATE TABLE IF NOT EXISTS gate (sender INTEGER PRIMARY KEY, last_seq INTEGER);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER);
CREATE TABLE IF NOT EXISTS inbox (id INTEGER PRIMARY KEY AUTOINCREMENT, envelope BLOB,
                                  file TEXT);
"""
_FILES = ("SELECT file FROM node_state WHERE file IS NOT NULL UNION ALL "
          "SELECT file FROM outbox WHERE file IS NOT NULL UNION ALL "
          "SELECT file FROM inbox WHERE file IS NOT NULL")
META_KEYS = ("rounds_started", "rounds_done", "next_seq")


class NodeStore:
    """The node persisted at ``path`` (created if absent, WAL journal), its large values in
    the directory ``path + ".blobs"`` (:mod:`bbjax.deploy.node.blobs`)."""

    def __init__(self, path: str | Path):
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None)
            # large pages for what blobs stay inline; a new file only, before the WAL switch
            self._db.execute("PRAGMA page_size=65536")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._blobs = BlobDir(f"{path}.blobs")
            self._blobs.keep_only({name for (name,) in self._db.execute(_FILES)})
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"node store {str(path)!r}: {e}") from e

    def state(self) -> bytes | None:
        """The saved node state bytes (None before the first commit)."""
        row = self._db.execute("SELECT data, file FROM node_state WHERE id = 0").fetchone()
        return None if row is None else self._read(*row)

    def outbox(self) -> list[tuple[int, int, bytes]]:
        """Unsent frames as (seq, peer, frame), by seq."""
        return [(s, p, self._read(f, n)) for s, p, f, n in
                self._db.execute("SELECT seq, peer, frame, file FROM outbox ORDER BY seq")]

    def last_seq(self) -> dict[int, int]:
        """The gate's last admitted seq per sender."""
        return dict(self._db.execute("SELECT sender, last_seq FROM gate"))

    def meta(self) -> dict[str, int]:
        """``rounds_started``, ``rounds_done`` and ``next_seq`` (0, 0, 1 when new)."""
        saved = dict(self._db.execute("SELECT key, value FROM meta"))
        return {"rounds_started": 0, "rounds_done": 0, "next_seq": 1} | saved

    def inbox(self) -> list[tuple[int, bytes]]:
        """Logged envelopes as (id, envelope), in arrival order."""
        return [(i, self._read(e, n)) for i, e, n in
                self._db.execute("SELECT id, envelope, file FROM inbox ORDER BY id")]

    def log_inbound(self, envelope: bytes, last_seq: Mapping[int, int]) -> int:
        """Log an admitted ``envelope`` with the gate's counters, atomically; its inbox id."""
        placed: list[tuple[bytes | None, str | None]] = []
        try:
            placed = self._place([envelope])
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute("INSERT INTO inbox (envelope, file) VALUES (?, ?)",
                                       placed[0])
                self._set_seqs(last_seq)
                return int(row.lastrowid)
        except (sqlite3.Error, OSError) as e:
            self._blobs.delete(file for _, file in placed if file is not None)
            raise StoreError(f"node store inbox: {e}") from e

    def commit(self, state_bytes: bytes, outbox_add: Iterable[tuple[int, int, bytes]] = (),
               outbox_remove: Iterable[int] = (), last_seq: Mapping[int, int] | None = None,
               meta: Mapping[str, int] | None = None, inbox_remove: Iterable[int] = ()) -> None:
        """Save the state, add and remove outbox rows, the gate's counters and ``meta``, and
        remove the inbox rows the state took in, atomically."""
        outbox_add, removed = list(outbox_add), [(s,) for s in outbox_remove]
        taken = [(i,) for i in inbox_remove]
        placed: list[tuple[bytes | None, str | None]] = []
        try:
            placed = self._place([state_bytes, *(f for _, _, f in outbox_add)])
            state, *frames = placed
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                stale = [n for (n,) in self._db.execute(
                    "SELECT file FROM node_state WHERE file IS NOT NULL")]
                stale += [n for (s,) in removed for (n,) in self._db.execute(
                    "SELECT file FROM outbox WHERE seq = ? AND file IS NOT NULL", (s,))]
                stale += [n for (i,) in taken for (n,) in self._db.execute(
                    "SELECT file FROM inbox WHERE id = ? AND file IS NOT NULL", (i,))]
                self._db.execute("INSERT OR REPLACE INTO node_state VALUES (0, ?, ?)", state)
                self._db.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?)",
                                     [(s, p, *v) for (s, p, _), v in zip(outbox_add, frames)])
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", removed)
                self._db.executemany("DELETE FROM inbox WHERE id = ?", taken)
                self._set_seqs(last_seq or {})
                self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                     [(k, int(v)) for k, v in (meta or {}).items()])
        except (sqlite3.Error, OSError) as e:
            self._blobs.delete(file for _, file in placed if file is not None)
            raise StoreError(f"node store commit: {e}") from e
        self._blobs.delete(stale)

    def _place(self, values: list[bytes]) -> list[tuple[bytes | None, str | None]]:
        """Each value as its (data, file) columns: large ones written to synced files."""
        placed = [(None, self._blobs.put(v)) if len(v) >= EXTERNAL_BYTES else (v, None)
                  for v in values]
        if any(file is not None for _, file in placed):
            self._blobs.sync()
        return placed

    def _read(self, data: bytes | None, file: str | None) -> bytes:
        return bytes(data) if file is None else self._blobs.get(file)

    def _set_seqs(self, last_seq: Mapping[int, int]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO gate VALUES (?, ?)", list(last_seq.items()))

    def close(self) -> None:
        self._db.close()
