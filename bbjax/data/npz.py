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

``x`` and ``y`` arrays hold numbers or booleans. A malformed file raises
:class:`DataError` naming the array at fault.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from typing import Any

import numpy as np

from bbjax.errors import DataError
from bbjax.data.checks import check_numeric
from bbjax.data.federated import FederatedData, _stack_clients

_PER_CLIENT = re.compile(r"([xy])_(0|[1-9][0-9]*)")


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


def load_npz(path: str | os.PathLike) -> FederatedData:
    """Read federated data from an ``.npz`` file in any of the layouts above."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise DataError(f"{os.fspath(path)!r} is not a readable .npz archive: {e}") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{os.fspath(path)!r} holds a single .npy array, not an .npz archive")
    with archive:
        arrays = {name: _read(archive, name) for name in archive.files}
    if "sizes" in arrays:
        return _load_sizes(arrays)
    if "client_ids" in arrays:
        return _load_client_ids(arrays)
    if any(_PER_CLIENT.fullmatch(name) for name in arrays):
        return _load_per_client(arrays)
    raise DataError(
        f"no known layout: expected an array 'sizes', 'client_ids' or 'x_0'; found {sorted(arrays)}"
    )


def _read(archive: Any, name: str) -> np.ndarray:
    try:
        return archive[name]
    except (ValueError, OSError, zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise DataError(f"array {name!r} cannot be read: {e}") from e


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
