"""The peer list of a deployment: every node's id, class, address and public key.

``peers.toml`` holds one ``[[peer]]`` table per node::

    [[peer]]
    id = 0
    class = "server"
    address = "http://127.0.0.1:8001"
    public_key = "<64 hex digits>"

Ids are integers in [0, 2**31 - 1], ids and public keys are unique, and an address is
``http(s)://host:port`` with nothing after the port."""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from typing import Any, Iterator, Sequence

from bbjax.deploy.toml_files import read_toml
from bbjax.errors import ConfigError

_FIELDS = ("id", "class", "address", "public_key")
_MAX_ID = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class PeerEntry:
    """One node of the deployment."""

    id: int
    peer_class: str
    address: str
    public_key: bytes


class Peers:
    """The validated entries, by id and by public key (:class:`ConfigError` naming the
    entry for a repeated id or key)."""

    def __init__(self, entries: Sequence[PeerEntry]):
        self._by_id: dict[int, PeerEntry] = {}
        self._by_key: dict[bytes, int] = {}
        for n, entry in enumerate(entries):
            if entry.id in self._by_id:
                raise ConfigError(f"peer[{n}]: id {entry.id} is given twice",
                                  field=f"peer[{n}].id")
            if entry.public_key in self._by_key:
                raise ConfigError(f"peer[{n}] (id {entry.id}): its public key is also peer "
                                  f"{self._by_key[entry.public_key]}'s",
                                  field=f"peer[{n}].public_key")
            self._by_id[entry.id] = entry
            self._by_key[entry.public_key] = entry.id

    def by_id(self, peer: int) -> PeerEntry:
        """The entry of ``peer``; :class:`ConfigError` when there is none."""
        try:
            return self._by_id[peer]
        except (KeyError, TypeError):
            raise ConfigError(f"peer {peer!r} is not in the peer list", field="peer") from None

    def id_of_key(self, public_key: bytes) -> int | None:
        """The id whose public key is ``public_key``, or ``None``."""
        return self._by_key.get(bytes(public_key))

    def classes(self) -> dict[str, list[int]]:
        """Each class's peer ids, sorted (``NodeConfig.peers``)."""
        out: dict[str, list[int]] = {}
        for peer in sorted(self._by_id):
            out.setdefault(self._by_id[peer].peer_class, []).append(peer)
        return out

    def __iter__(self) -> Iterator[PeerEntry]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)


def load_peers(path: str | os.PathLike[str]) -> Peers:
    """The peer list in ``path``; :class:`ConfigError` naming the entry and field at fault."""
    name = os.fspath(path)
    table = read_toml(path, "peer list")
    if set(table) != {"peer"} or not isinstance(table["peer"], list) or not table["peer"]:
        raise ConfigError(f"peer list {name!r} must hold [[peer]] tables and nothing else",
                          field="peer")
    return Peers([_entry(n, raw) for n, raw in enumerate(table["peer"])])


def _entry(n: int, raw: Any) -> PeerEntry:
    where = f"peer[{n}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} is not a table", field=where)
    if set(raw) != set(_FIELDS):
        missing = sorted(set(_FIELDS) - set(raw))
        extra = sorted(set(raw) - set(_FIELDS))
        raise ConfigError(f"{where} must have exactly the fields {list(_FIELDS)}"
                          + (f"; missing {missing}" if missing else "")
                          + (f"; unknown {extra}" if extra else ""), field=where)
    peer = raw["id"]
    if type(peer) is not int or not 0 <= peer <= _MAX_ID:
        raise ConfigError(f"{where}.id must be an integer in [0, {_MAX_ID}], got {peer!r}",
                          field=f"{where}.id")
    where = f"{where} (id {peer})"
    peer_class = raw["class"]
    if not isinstance(peer_class, str) or not peer_class:
        raise ConfigError(f"{where}.class must be a non-empty string, got {peer_class!r}",
                          field=f"peer[{n}].class")
    key = raw["public_key"]
    if (not isinstance(key, str) or len(key) != 64
            or any(c not in "0123456789abcdefABCDEF" for c in key)):
        raise ConfigError(f"{where}.public_key must be 64 hex digits (32 bytes), got {key!r}",
                          field=f"peer[{n}].public_key")
    return PeerEntry(peer, peer_class, _address(where, n, raw["address"]), bytes.fromhex(key))


def _address(where: str, n: int, address: Any) -> str:
    problem = None
    if not isinstance(address, str):
        problem = "is not a string"
    else:
        parts = urllib.parse.urlsplit(address)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https"):
            problem = "must start with http:// or https://"
        elif not parts.hostname or parts.username is not None or parts.password is not None:
            problem = "must name a host (and no user)"
        elif not port:
            problem = "must give a port in [1, 65535]"
        elif parts.path not in ("", "/") or parts.query or parts.fragment:
            problem = "must end at the port (no path, query or fragment)"
    if problem:
        raise ConfigError(f"{where}.address {problem}: got {address!r}",
                          field=f"peer[{n}].address")
    return address.rstrip("/")
