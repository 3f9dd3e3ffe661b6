"""Errors of the wire boundary.

Decoding (:func:`~bbjax.runtime.decode`, :func:`~bbjax.runtime.decode_tensor`) raises
only these for any input bytes; encoding raises them for values the format cannot carry.
"""

from __future__ import annotations

from typing import Any

from bbjax.errors import BbjaxError


class EnvelopeError(BbjaxError):
    """Bytes could not be decoded from, or a value encoded to, the wire format.

    ``field`` names the field at fault (e.g. ``"fills[2].payload.length"``); ``offset`` is
    the byte offset of that field in the input being decoded (``None`` when encoding).
    """

    def __init__(self, message: str, *, field: str | None = None, offset: int | None = None):
        self.field = field
        self.offset = offset
        where = field or ""
        if offset is not None:
            where += f" at offset {offset}"
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore, (type(self), str(self), dict(self.__dict__))


def _restore(cls: type[EnvelopeError], message: str, state: dict[str, Any]) -> EnvelopeError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class TruncatedEnvelope(EnvelopeError):
    """The input ends before the envelope it starts (or declares) does."""


class OversizedEnvelope(EnvelopeError):
    """A size or count exceeds its cap in :class:`~bbjax.runtime.Limits`.

    ``size`` is the size or count seen (or declared), ``limit`` the cap.
    """

    def __init__(
        self,
        message: str,
        *,
        size: int,
        limit: int,
        field: str | None = None,
        offset: int | None = None,
    ):
        self.size = size
        self.limit = limit
        super().__init__(message, field=field, offset=offset)


class UnsupportedVersion(EnvelopeError):
    """The envelope's format version is not the one this decoder reads.

    ``version`` is the version seen, ``supported`` the one this decoder reads.
    """

    def __init__(self, version: int, *, supported: int, offset: int):
        self.version = version
        self.supported = supported
        super().__init__(
            f"format version {version} is not supported (this decoder reads version {supported})",
            field="version",
            offset=offset,
        )


class MalformedEnvelope(EnvelopeError):
    """The bytes are not a valid envelope (bad magic, a length inconsistent with the data,
    invalid UTF-8, an empty id, bytes left over, checksum mismatch), or a value given to
    the encoder has the wrong type or range."""


class TensorEncodeError(EnvelopeError):
    """An array (or a dtype and shape) cannot be carried by the tensor format: unsupported
    dtype, rank or size over the caps, or not convertible to a NumPy array."""


class TensorDecodeError(EnvelopeError):
    """A tensor payload is invalid: unknown dtype code, rank over the cap, byte count that
    does not match the shape, a bool byte other than 0 or 1, or truncated dims."""
