"""Federated data: every client's examples stacked on a leading client axis, padded to one size.

Client ``i`` owns rows ``0 .. sizes[i] - 1`` of ``x[i]`` and ``y[i]``; the remaining rows up
to ``max_size`` are zeros and ``mask[i, j] == (j < sizes[i])``. One static shape for every
client lets a training step ``vmap`` over the client axis; ``sizes`` (the true example
counts) are the weights of a weighted aggregation such as FedAvg.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import struct

from bbjax.errors import DataError
from bbjax.data.checks import check_examples, check_numeric
from bbjax.data.keys import numpy_rng

Array = Any  # numpy or JAX array


@struct.dataclass
class FederatedData:
    """Per-client examples, stacked and zero-padded (a pytree; all four fields are leaves).

    ``x``: ``[num_clients, max_size, *feature_shape]``.
    ``y``: ``[num_clients, max_size, *label_shape]``.
    ``mask``: bool ``[num_clients, max_size]``, True on real examples.
    ``sizes``: int32 ``[num_clients]``, each client's number of real examples.

    The builders (``from_clients``, ``from_indices``, the partitioners, the generators and
    ``load_npz``) return numpy arrays that satisfy the layout above; ``jax.device_put`` or
    any jitted function moves them to the device.
    """

    x: Array
    y: Array
    mask: Array
    sizes: Array

    @property
    def num_clients(self) -> int:
        """Length of the client axis."""
        return self.sizes.shape[0]

    @property
    def max_size(self) -> int:
        """Padded number of rows per client."""
        return self.mask.shape[1]

    @classmethod
    def from_clients(
        cls, xs: Sequence[Array], ys: Sequence[Array], pad_to: int | None = None
    ) -> FederatedData:
        """Stack per-client arrays (``xs[i]``: ``[n_i, *feature_shape]``, ``ys[i]``:
        ``[n_i, *label_shape]``), padding to ``pad_to`` rows (default: the largest ``n_i``).

        All ``xs`` share one feature shape and dtype, all ``ys`` one label shape and dtype.
        Raises :class:`DataError` naming ``xs[i]``, ``ys[i]`` or ``pad_to`` otherwise.
        """
        return _stack_clients(xs, ys, pad_to, lambda name, i: f"{name}s[{i}]")

    @classmethod
    def from_indices(
        cls, x: Array, y: Array, indices: Sequence[Array], pad_to: int | None = None
    ) -> FederatedData:
        """Client ``i`` gets examples ``x[indices[i]]``, ``y[indices[i]]`` in that order.

        Raises :class:`DataError` unless ``x`` and ``y`` share a leading axis of ``N >= 1``
        examples and every ``indices[i]`` is a 1-D integer array with entries in ``[0, N)``.
        """
        x, y = check_examples(x, y)
        if len(indices) == 0:
            raise DataError("indices must name at least one client")
        parts = []
        for i, part in enumerate(indices):
            part = np.asarray(part)
            if part.size == 0:
                part = part.astype(np.int64).ravel()
            if part.ndim != 1 or not np.issubdtype(part.dtype, np.integer):
                raise DataError(f"indices[{i}] must be a 1-D integer array, got {part.dtype} "
                                f"of shape {part.shape}")
            if part.size and (part.min() < 0 or part.max() >= x.shape[0]):
                raise DataError(f"indices[{i}] has entries outside [0, {x.shape[0]})")
            parts.append(part)
        return _gather(x, y, parts, pad_to)

    def client(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Client ``i``'s real examples ``(x, y)`` as numpy arrays, padding removed."""
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not (
            0 <= i < self.num_clients
        ):
            raise DataError(f"client index must be an integer in [0, {self.num_clients}), "
                            f"got {i!r}")
        n = int(self.sizes[i])
        return np.asarray(self.x[i, :n]), np.asarray(self.y[i, :n])


def train_test_split(
    key: jax.Array, data: FederatedData, test_fraction: float = 0.1
) -> tuple[FederatedData, FederatedData]:
    """Split every client's examples at random into ``(train, test)``.

    A client with ``n`` examples keeps ``floor((1 - test_fraction) * n)`` of them, in a
    random order, for training and the rest for testing, as the FedProx data scripts do
    with ``test_fraction=0.1``. Each part is padded to its own largest client. Host-side;
    deterministic under ``key``. Raises :class:`DataError` unless ``0 < test_fraction < 1``.
    """
    if isinstance(test_fraction, bool) or not (
        isinstance(test_fraction, numbers.Real) and 0.0 < test_fraction < 1.0
    ):
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = numpy_rng(key)
    x, y, sizes = np.asarray(data.x), np.asarray(data.y), np.asarray(data.sizes)
    train, test = ([], []), ([], [])
    for i, n in enumerate(sizes.tolist()):
        order = rng.permutation(n)
        cut = int((1.0 - test_fraction) * n)
        for part, rows in ((train, order[:cut]), (test, order[cut:])):
            part[0].append(x[i, rows])
            part[1].append(y[i, rows])
    return _pad(*train, None), _pad(*test, None)


def _stack_clients(
    xs: Sequence[Array],
    ys: Sequence[Array],
    pad_to: int | None,
    name: Callable[[str, int], str],
) -> FederatedData:
    """``from_clients``, naming client ``i``'s arrays ``name("x", i)`` and ``name("y", i)``."""
    if len(xs) == 0:
        raise DataError("xs must hold at least one client")
    if len(ys) != len(xs):
        raise DataError(f"ys must hold one array per client ({len(xs)}), got {len(ys)}")
    xs = [np.asarray(a) for a in xs]
    ys = [np.asarray(a) for a in ys]
    for i, (x, y) in enumerate(zip(xs, ys)):
        for arr, ref, what in ((x, xs[0], "x"), (y, ys[0], "y")):
            check_numeric(arr, name(what, i))
            if arr.ndim == 0:
                raise DataError(f"{name(what, i)} needs a leading example axis, got a scalar")
            if arr.shape[1:] != ref.shape[1:] or arr.dtype != ref.dtype:
                raise DataError(
                    f"{name(what, i)} has per-example shape {arr.shape[1:]} and dtype "
                    f"{arr.dtype}; {name(what, 0)} has {ref.shape[1:]} and {ref.dtype}"
                )
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{name('y', i)} has {y.shape[0]} examples, {name('x', i)} has "
                            f"{x.shape[0]}")
    return _pad(xs, ys, pad_to)


def _gather(
    x: np.ndarray, y: np.ndarray, parts: Sequence[np.ndarray], pad_to: int | None
) -> FederatedData:
    """Client ``i`` gets rows ``parts[i]`` of ``x`` and ``y``."""
    return _pad([x[p] for p in parts], [y[p] for p in parts], pad_to)


def _pad(xs: list[np.ndarray], ys: list[np.ndarray], pad_to: int | None) -> FederatedData:
    """Stack the per-client arrays (checked to agree), zero-padded to ``pad_to`` rows."""
    sizes = np.array([len(a) for a in xs], np.int32)
    largest = int(sizes.max())
    if pad_to is None:
        pad_to = largest
    elif isinstance(pad_to, bool) or not isinstance(pad_to, numbers.Integral) or pad_to < largest:
        raise DataError(f"pad_to must be an integer >= the largest client ({largest}), "
                        f"got {pad_to!r}")
    shape = (len(xs), int(pad_to))
    xp = np.zeros(shape + xs[0].shape[1:], xs[0].dtype)
    yp = np.zeros(shape + ys[0].shape[1:], ys[0].dtype)
    for i, (x, y) in enumerate(zip(xs, ys)):
        xp[i, : len(x)] = x
        yp[i, : len(y)] = y
    return FederatedData(x=xp, y=yp, mask=np.arange(shape[1]) < sizes[:, None], sizes=sizes)
