"""Large values of a node's store as files beside its SQLite file.

SQLite writes a blob of hundreds of megabytes far slower than a file (page by page, then
again at the WAL checkpoint), so the store keeps values from :data:`EXTERNAL_BYTES` on in
files of a :class:`BlobDir` and only their names in its tables. A file is written, synced
and renamed into place (and the directory synced) before the transaction that names it
commits; a file no committed row names any more (a crash between the two, or a value
replaced or removed) is deleted, after the commit or at the next open."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

EXTERNAL_BYTES = 1 << 20
"""Values this large or larger go to files; smaller ones stay in SQLite."""


class BlobDir:
    """Files named by random hex in the directory ``path`` (created if absent)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(exist_ok=True)

    def put(self, data: bytes) -> str:
        """Write ``data`` to a new file, synced; its name. Call :meth:`sync` before the
        transaction that names it."""
        name = secrets.token_hex(16)
        tmp = self.path / f"{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / name)
        return name

    def sync(self) -> None:
        """Make the files put so far survive a crash (their directory entries)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, name: str) -> bytes:
        """The bytes of file ``name``."""
        return (self.path / name).read_bytes()

    def delete(self, names: Iterable[str]) -> None:
        """Remove the files ``names`` (missing ones are ignored)."""
        for name in names:
            (self.path / name).unlink(missing_ok=True)

    def keep_only(self, names: set[str]) -> None:
        """Remove every file but ``names`` (unfinished ``.tmp`` files included)."""
        self.delete(p.name for p in self.path.iterdir() if p.name not in names)
