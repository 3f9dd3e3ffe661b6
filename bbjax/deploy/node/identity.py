"""A node's Ed25519 identity (PyNaCl): its peer id and signing key, and the key file that
``bbjax keys new`` writes (TOML ``secret = "<64 hex>"``, mode 0600, never overwritten).

The secret never appears in a message, a ``repr`` or an error."""

from __future__ import annotations

import os

import nacl.signing

from bbjax.deploy.toml_files import read_toml
from bbjax.errors import ConfigError

_SECRET_HEX = 64


class Identity:
    """Peer ``peer`` signing with ``signing_key``; ``public`` is its 32-byte public key."""

    def __init__(self, peer: int, signing_key: nacl.signing.SigningKey):
        if type(peer) is not int or not 0 <= peer <= 2**31 - 1:
            raise ConfigError(f"peer id must be an integer in [0, 2**31 - 1], got {peer!r}",
                              field="peer")
        if not isinstance(signing_key, nacl.signing.SigningKey):
            raise ConfigError(f"signing_key must be a nacl SigningKey, got "
                              f"{type(signing_key).__name__}", field="signing_key")
        self.peer = peer
        self._key = signing_key
        self.public: bytes = bytes(signing_key.verify_key)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._key.sign(bytes(data)).signature

    def __repr__(self) -> str:
        return f"Identity(peer={self.peer}, public={self.public.hex()})"


def new_key_file(path: str | os.PathLike[str]) -> bytes:
    """Write a fresh secret key to ``path`` (mode 0600) and return its public key;
    :class:`ConfigError` when ``path`` exists or cannot be written."""
    key = nacl.signing.SigningKey.generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{os.fspath(path)!r} exists; a key file is never overwritten",
                          field="out") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {os.fspath(path)!r}: {exc.strerror}",
                          field="out") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, f'secret = "{bytes(key).hex()}"\n'.encode("ascii"))
    except OSError as exc:
        raise ConfigError(f"cannot write {os.fspath(path)!r}: {exc.strerror}",
                          field="out") from None
    finally:
        os.close(fd)
    return bytes(key.verify_key)


def load_key_file(path: str | os.PathLike[str]) -> nacl.signing.SigningKey:
    """The signing key in ``path``; :class:`ConfigError` for a file that cannot be read or
    is not exactly ``secret = "<64 hex digits>"``."""
    name = os.fspath(path)
    table = read_toml(path, "key file", parser_detail=False)
    if set(table) != {"secret"}:
        raise ConfigError(f"key file {name!r} must hold exactly one field, secret; it has "
                          f"{sorted(table)}", field="secret")
    secret = table["secret"]
    if (not isinstance(secret, str) or len(secret) != _SECRET_HEX
            or any(c not in "0123456789abcdefABCDEF" for c in secret)):
        raise ConfigError(f"key file {name!r}: secret must be {_SECRET_HEX} hex digits",
                          field="secret")
    return nacl.signing.SigningKey(bytes.fromhex(secret))
