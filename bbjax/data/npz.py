"""Federated data in ``.npz`` files.

:func:`load_npz` accepts three layouts, told apart by their array names (no other array
may be present):

- **sizes** (canonical; written by :func:`save_npz`): ``x`` ``[N, *feature_shape]`` and
  ``y`` ``[N, *label_shape]`` hold every client's examples back to back, ``sizes``
  (integer ``[C]``, summing to ``N``) their counts in client order, and an optional scalar
  integer ``max_size`` the padded size (default: the largest client).
- **client_ids**: ``x`` and ``y`` as above and ``client_ids`` (integer ``[N]``); client
  ``c`` is the ``c``-th smallest distinct id and keeps its rows in file order.
- **per-client**: ``x_0, y_0, ..., x_{C-1}, y_{C-1}``, client ``i``'s arrays unpadded.

``x`` and ``y`` arrays hold numbers or booleans. A malformed, corrupted or oversized file
raises :class:`DataError` naming the file and the array at fault.
"""

from __future__ import annotations

import ast
import lzma
import math
import os
import re
import struct
import zipfile
import zlib
from typing import BinaryIO

import numpy as np

from bbjax._checks import check_count
from bbjax.errors import DataError
from bbjax.data.checks import check_numeric
from bbjax.data.federated import FederatedData, _stack_clients

MAX_BYTES = 1 << 32
"""The default cap on the bytes of all arrays :func:`load_npz` reads from one file (4 GiB)."""

_PER_CLIENT = re.compile(r"([xy])_(0|[1-9][0-9]*)")
# .npy format version -> (struct format of the header length, header encoding)
_HEADER_LENGTH = {b"\x01\x00": ("<H", "latin1"), b"\x02\x00": ("<I", "latin1"),
                  b"\x03\x00": ("<I", "utf8")}
_END_RECORD = 22  # bytes of a zip end-of-central-directory record without its comment
_MAX_HEADER = 10_000  # numpy's own limit on a header it reads without allow_pickle
# What zipfile and its decompressors raise on corrupted bytes: BadZipFile; EOFError and
# OSError (truncation, bz2); RuntimeError (an encrypted member; NotImplementedError, an
# unknown compression method); ValueError (UnicodeDecodeError, a bad size or offset);
# struct.error, zlib.error, lzma.LZMAError; OverflowError (an offset past any file).
_DECODE_ERRORS = (zipfile.BadZipFile, EOFError, OSError, RuntimeError, ValueError,
                  struct.error, zlib.error, lzma.LZMAError, OverflowError)


def save_npz(path: str | os.PathLike, data: FederatedData) -> None:
    """Write ``data`` to ``path`` (exactly that name) in the canonical *sizes* layout.

    ``load_npz(path)`` gives back equal arrays, padding included (padding rows are zeros).
    """
    sizes = np.asarray(data.sizes)
    x, y = np.asarray(data.x), np.asarray(data.y)
    with open(path, "wb") as f:
        np.savez(
            f,
            x=np.concatenate([x[i, :n] for i, n in enumerate(sizes)]),
            y=np.concatenate([y[i, :n] for i, n in enumerate(sizes)]),
            sizes=sizes.astype(np.int64),
            max_size=np.int64(data.max_size),
        )


def load_npz(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES) -> FederatedData:
    """Read federated data from an ``.npz`` file in any of the layouts above.

    Each array's header is checked against its member's size, and all arrays together
    against ``max_bytes``, before anything is allocated. A missing file raises
    :class:`FileNotFoundError`; any other unreadable, corrupted, oversized or pickled
    content raises :class:`DataError` naming the file, the member and what is wrong.
    """
    max_bytes = check_count("max_bytes", max_bytes, error=DataError)
    where = repr(os.fspath(path))
    try:
        with open(path, "rb") as f:
            arrays = _read_archive(f, where, max_bytes)
    except FileNotFoundError:
        raise
    except OSError as e:  # a directory, no permission: the file itself cannot be read
        raise DataError(f"{where} cannot be read: {e}") from e
    try:
        return _from_arrays(arrays)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None


def _from_arrays(arrays: dict[str, np.ndarray]) -> FederatedData:
    if "sizes" in arrays:
        return _load_sizes(arrays)
    if "client_ids" in arrays:
        return _load_client_ids(arrays)
    if any(_PER_CLIENT.fullmatch(name) for name in arrays):
        return _load_per_client(arrays)
    raise DataError(
        f"no known layout: expected an array 'sizes', 'client_ids' or 'x_0'; found {sorted(arrays)}"
    )


def _read_archive(f: BinaryIO, where: str, max_bytes: int) -> dict[str, np.ndarray]:
    """Every array of the zip archive open in ``f``, by name (the member's without ``.npy``)."""
    signature = f.read(len(np.lib.format.MAGIC_PREFIX))
    if signature == np.lib.format.MAGIC_PREFIX:
        raise DataError(f"{where} holds a single .npy array, not an .npz archive")
    if signature[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise DataError(f"{where} is not an .npz archive: it does not start with a zip "
                        f"signature")
    declared = _declared_members(f)
    f.seek(0)
    arrays: dict[str, np.ndarray] = {}
    what = where
    try:
        with zipfile.ZipFile(f) as archive:
            if declared is not None and declared != len(archive.infolist()):
                raise DataError(f"{where}: the archive declares {declared} members but its "
                                f"directory lists {len(archive.infolist())}")
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                what = f"{where}: array {name!r} (member {info.filename!r})"
                if name == info.filename:
                    raise DataError(f"{what} is not an .npy array")
                if name in arrays:
                    raise DataError(f"{what} appears twice")
                budget = max_bytes - sum(a.nbytes for a in arrays.values())
                with archive.open(info) as stream:
                    arrays[name] = _read_array(stream, info.file_size, budget, max_bytes, what)
    except _DECODE_ERRORS as e:
        raise DataError(f"{what} cannot be decoded: {type(e).__name__}: {e}") from e
    return arrays


def _declared_members(f: BinaryIO) -> int | None:
    """The member count in the end record of the zip archive in ``f``, found as zipfile
    finds it (``None`` when there is none, or when it defers to a zip64 record)."""
    end = f.seek(0, os.SEEK_END)
    f.seek(max(0, end - _END_RECORD - 0xFFFF))  # the record, then at most a 64 KiB comment
    tail = f.read()
    at = len(tail) - _END_RECORD
    if tail[at:at + 4] != b"PK\x05\x06" or tail[-2:] != b"\x00\x00":
        at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _END_RECORD:
        return None
    (count,) = struct.unpack_from("<H", tail, at + 10)
    return None if count == 0xFFFF else count


def _read_array(stream: BinaryIO, size: int, budget: int, max_bytes: int,
                what: str) -> np.ndarray:
    """The array of an ``.npy`` member of ``size`` bytes, allocating at most ``budget``."""
    dtype, shape, fortran_order, header_size = _read_header(stream, what)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != size - header_size:
        raise DataError(f"{what}: the header declares shape {shape} of {dtype} ({nbytes} "
                        f"bytes) but the member holds {size - header_size} bytes of data")
    if nbytes > budget:
        raise DataError(f"{what}: {nbytes} more bytes would exceed max_bytes={max_bytes} "
                        f"({max_bytes - budget} already read)")
    data = stream.read(nbytes)
    if len(data) != nbytes:
        raise DataError(f"{what}: truncated, {len(data)} of {nbytes} bytes of data")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")


def _read_header(stream: BinaryIO, what: str) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """``(dtype, shape, fortran_order, header size in bytes)`` of an ``.npy`` stream."""
    magic = stream.read(len(np.lib.format.MAGIC_PREFIX) + 2)
    if len(magic) != 8 or magic[:6] != np.lib.format.MAGIC_PREFIX:
        raise DataError(f"{what}: no .npy signature")
    if magic[6:] not in _HEADER_LENGTH:
        raise DataError(f"{what}: unknown .npy format version {magic[6]}.{magic[7]}")
    fmt, encoding = _HEADER_LENGTH[magic[6:]]
    length_bytes = stream.read(struct.calcsize(fmt))
    if len(length_bytes) != struct.calcsize(fmt):
        raise DataError(f"{what}: truncated .npy header")
    (length,) = struct.unpack(fmt, length_bytes)
    if length > _MAX_HEADER:
        raise DataError(f"{what}: .npy header of {length} bytes (at most {_MAX_HEADER})")
    raw = stream.read(length)
    if len(raw) != length:
        raise DataError(f"{what}: truncated .npy header")
    try:
        header = ast.literal_eval(raw.decode(encoding))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
        raise DataError(f"{what}: unreadable .npy header {raw[:80]!r}: {e}") from e
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise DataError(f"{what}: the .npy header must be a dict of 'descr', "
                        f"'fortran_order' and 'shape', got {raw[:80]!r}")
    shape, fortran_order = header["shape"], header["fortran_order"]
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise DataError(f"{what}: the .npy shape must be a tuple of integers >= 0, "
                        f"got {shape!r}")
    if not isinstance(fortran_order, bool):
        raise DataError(f"{what}: the .npy fortran_order must be a bool, got "
                        f"{fortran_order!r}")
    try:
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise DataError(f"{what}: invalid .npy dtype {header['descr']!r:.80}: {e}") from e
    if dtype.hasobject:
        raise DataError(f"{what}: dtype {dtype} holds Python objects; pickled arrays are "
                        f"refused")
    if dtype.itemsize == 0 or dtype.shape != ():
        raise DataError(f"{what}: dtype {dtype} has no fixed scalar element size")
    return dtype, shape, fortran_order, len(magic) + len(length_bytes) + length


def _load_sizes(arrays: dict[str, np.ndarray]) -> FederatedData:
    _only(arrays, {"x", "y", "sizes", "max_size"}, "sizes")
    x, y = _examples(arrays)
    sizes = _integers(arrays, "sizes", ndim=1)
    if len(sizes) == 0 or sizes.min() < 0 or sizes.sum() != len(x):
        raise DataError(
            f"array 'sizes' must hold at least one count >= 0 summing to the {len(x)} rows "
            f"of 'x', got {sizes.tolist() if len(sizes) <= 20 else sizes}"
        )
    pad_to = None
    if "max_size" in arrays:
        pad_to = int(_integers(arrays, "max_size", ndim=0))
        if pad_to < sizes.max():
            raise DataError(f"array 'max_size' ({pad_to}) is smaller than the largest client "
                            f"({sizes.max()})")
    bounds = np.cumsum(sizes)[:-1]
    return _stack_clients(np.split(x, bounds), np.split(y, bounds), pad_to, _whole)


def _load_client_ids(arrays: dict[str, np.ndarray]) -> FederatedData:
    _only(arrays, {"x", "y", "client_ids"}, "client_ids")
    x, y = _examples(arrays)
    ids = _integers(arrays, "client_ids", ndim=1)
    if len(x) == 0:
        raise DataError("array 'x' has no rows: the client_ids layout needs an example")
    if len(ids) != len(x):
        raise DataError(f"array 'client_ids' must hold one id per row of 'x' ({len(x)}), "
                        f"got {len(ids)}")
    order = np.argsort(ids, kind="stable")
    bounds = np.flatnonzero(np.diff(ids[order])) + 1
    return _stack_clients(np.split(x[order], bounds), np.split(y[order], bounds), None, _whole)


def _load_per_client(arrays: dict[str, np.ndarray]) -> FederatedData:
    for name in sorted(arrays):
        if not _PER_CLIENT.fullmatch(name):
            raise DataError(f"unexpected array {name!r} in the per-client layout (x_i, y_i)")
    num_clients = 1 + max(int(_PER_CLIENT.fullmatch(n).group(2)) for n in arrays)
    for i in range(num_clients):
        for a in "xy":
            if f"{a}_{i}" not in arrays:
                raise DataError(f"array '{a}_{i}' is missing: the per-client layout needs "
                                f"x_i and y_i for every client 0..{num_clients - 1}")
    xs = [arrays[f"x_{i}"] for i in range(num_clients)]
    ys = [arrays[f"y_{i}"] for i in range(num_clients)]
    return _stack_clients(xs, ys, None, lambda a, i: f"array '{a}_{i}'")


def _whole(name: str, i: int) -> str:
    return f"array '{name}' (client {i})"


def _only(arrays: dict[str, np.ndarray], allowed: set[str], layout: str) -> None:
    for name in sorted(arrays):
        if name not in allowed:
            raise DataError(f"unexpected array {name!r} in the {layout} layout "
                            f"(allowed: {sorted(allowed)})")


def _examples(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    for name in ("x", "y"):
        if name not in arrays:
            raise DataError(f"array {name!r} is missing")
        check_numeric(arrays[name], f"array {name!r}")
        if arrays[name].ndim == 0:
            raise DataError(f"array {name!r} needs a leading example axis, got a scalar")
    x, y = arrays["x"], arrays["y"]
    if len(y) != len(x):
        raise DataError(f"array 'y' has {len(y)} rows, 'x' has {len(x)}")
    return x, y


def _integers(arrays: dict[str, np.ndarray], name: str, ndim: int) -> np.ndarray:
    a = arrays[name]
    if a.ndim != ndim or not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"array {name!r} must be a {ndim}-D integer array, got {a.dtype} of "
                        f"shape {a.shape}")
    return a
