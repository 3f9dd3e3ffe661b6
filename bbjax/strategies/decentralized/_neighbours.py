"""The in-neighbour array all topologies share: int ``[N, k]``, row ``i`` the peers whose
messages peer ``i`` receives, ``-1`` padding a row of lower degree."""

from __future__ import annotations

from typing import Any

import numpy as np

from bbjax.errors import TopologyError

EMPTY = -1


def neighbour_array(value: Any, *, what: str = "neighbours") -> np.ndarray:
    """``value`` as int64 ``[N, k]``, unless it is not an integer array of that shape with
    N >= 2, k >= 1, ids in ``[0, N)`` or -1, no node its own neighbour and no id twice in a row."""
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.integer) or array.ndim != 2 \
            or array.shape[0] < 2 or array.shape[1] < 1:
        raise TopologyError(f"{what} must be an int array [N, k] with N >= 2 and k >= 1, "
                            f"got {array.dtype}{list(array.shape)}")
    array = array.astype(np.int64)
    count = array.shape[0]
    bad = np.argwhere((array < EMPTY) | (array >= count))
    if bad.size:
        i, j = bad[0]
        raise TopologyError(f"{what}[{i}, {j}] is {array[i, j]}, not a node id in [0, {count}) "
                            f"or -1 (no neighbour)")
    loops = np.argwhere(array == np.arange(count)[:, None])
    if loops.size:
        raise TopologyError(f"{what}[{loops[0][0]}] lists node {loops[0][0]} itself; the self "
                            f"weight is separate")
    ordered = np.sort(array, axis=1)
    twice = np.argwhere((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != EMPTY))
    if twice.size:
        i, j = twice[0]
        raise TopologyError(f"{what}[{i}] lists node {ordered[i, j]} twice")
    return array


def degrees(neighbours: np.ndarray) -> np.ndarray:
    """How many neighbours each row lists."""
    return (neighbours != EMPTY).sum(axis=1)


def reverse_slots(neighbours: np.ndarray) -> np.ndarray:
    """``[N, k]``: for ``j = neighbours[i, s]``, the slot of ``i`` in row ``j`` (-1 where row
    ``j`` does not list ``i``, and on padding): ``w[j, reverse[i, s]]`` weighs the reverse edge."""
    count, k = neighbours.shape
    rows = np.broadcast_to(np.arange(count)[:, None], neighbours.shape)
    valid = neighbours != EMPTY
    reverse = np.full(neighbours.shape, EMPTY, dtype=np.int64)
    if not valid.any():
        return reverse
    codes = rows[valid] * count + neighbours[valid]
    flat_slots = np.broadcast_to(np.arange(k), neighbours.shape)[valid]
    order = np.argsort(codes)
    codes, flat_slots = codes[order], flat_slots[order]
    wanted = neighbours[valid] * count + rows[valid]
    at = np.minimum(np.searchsorted(codes, wanted), codes.size - 1)
    found = codes[at] == wanted
    reverse[valid] = np.where(found, flat_slots[at], EMPTY)
    return reverse


def pad_rows(rows: list[list[int]]) -> np.ndarray:
    """Lists of neighbour ids as an int64 ``[N, max length]`` array padded with -1."""
    width = max(1, max(len(row) for row in rows))
    array = np.full((len(rows), width), EMPTY, dtype=np.int64)
    for i, row in enumerate(rows):
        array[i, :len(row)] = row
    return array
