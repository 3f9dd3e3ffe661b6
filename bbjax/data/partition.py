"""Partitioners: split a centralized dataset ``(x, y)`` among ``num_clients`` clients.

Each assigns every example to exactly one client, runs on the host, is a deterministic
function of its (concrete) JAX ``key`` and returns a :class:`FederatedData` in which a
client's examples keep their order in ``x``. ``x`` and ``y`` share a leading axis of ``N``
examples; :func:`dirichlet` and :func:`shards` need 1-D integer class labels ``y``. Invalid
arguments raise :class:`DataError` naming the parameter.
"""

from __future__ import annotations

import numbers

import jax
import numpy as np

from bbjax.errors import DataError
from bbjax._checks import check_count, check_positive
from bbjax.data.checks import check_examples, check_labels
from bbjax.data.federated import FederatedData
from bbjax.data.keys import numpy_rng

MAX_DRAWS = 1000
"""How many times :func:`dirichlet` draws a partition before giving up on ``min_size``."""


def iid(key: jax.Array, x: np.ndarray, y: np.ndarray, num_clients: int) -> FederatedData:
    """Uniformly random, balanced: shuffle the ``N`` examples and cut them into
    ``num_clients`` consecutive parts, the first ``N mod num_clients`` one example larger."""
    x, y = check_examples(x, y)
    num_clients = _check_clients(num_clients, len(x))
    order = numpy_rng(key).permutation(len(x))
    return _assign(x, y, np.array_split(order, num_clients))


def dirichlet(
    key: jax.Array,
    x: np.ndarray,
    y: np.ndarray,
    num_clients: int,
    alpha: float,
    min_size: int = 10,
) -> FederatedData:
    """Label skew: each class's examples are split among clients in proportions ~ Dir(α).

    The "hetero-dir" partition of Yurochkin et al. 2019, as in NIID-Bench (Li et al. 2022)
    and FedLab's ``hetero_dir_partition``. For each class ``k`` in ascending order: shuffle
    its examples; draw ``p ~ Dir(α·1_C)``; zero ``p_j`` for every client that already holds
    ``>= N / C`` examples (the balancing step) and renormalize (if that zeroes all of ``p``,
    keep the drawn ``p``); cut the shuffled class at ``floor(cumsum(p)[:-1] · n_k)`` and
    give piece ``j`` to client ``j``. Redraw everything until every client holds at least
    ``min_size`` examples (at most ``MAX_DRAWS`` times). Smaller ``alpha`` means more skew.
    """
    x, y = check_examples(x, y)
    y = check_labels(y)
    num_clients = _check_clients(num_clients, len(x))
    alpha = check_positive("alpha", alpha, error=DataError)
    min_size = _check_min_size(min_size, num_clients, len(x))
    rng = numpy_rng(key)
    by_class = np.argsort(y, kind="stable")
    classes = np.split(by_class, np.flatnonzero(np.diff(y[by_class])) + 1)
    owner = np.empty(len(x), np.int64)
    for _ in range(MAX_DRAWS):
        counts = np.zeros(num_clients, np.int64)
        for members in classes:
            members = rng.permutation(members)
            drawn = rng.dirichlet(np.full(num_clients, alpha))
            p = drawn * (counts < len(x) / num_clients)
            p = p / p.sum() if p.sum() > 0 else drawn
            cuts = (np.cumsum(p) * len(members)).astype(np.int64)[:-1]
            pieces = np.diff(cuts, prepend=0, append=len(members))
            owner[members] = np.repeat(np.arange(num_clients), pieces)
            counts += pieces
        if counts.min() >= min_size:
            return _assign(x, y, np.split(np.argsort(owner, kind="stable"), np.cumsum(counts)[:-1]))
    raise _unreachable(min_size, alpha)


def shards(
    key: jax.Array, x: np.ndarray, y: np.ndarray, num_clients: int, shards_per_client: int
) -> FederatedData:
    """Pathological label skew (McMahan et al. 2017): sort the examples by label (stable),
    cut them into ``S = num_clients · shards_per_client`` consecutive shards (sizes
    ``ceil(N / S)`` for the first ``N mod S``, ``floor(N / S)`` for the rest) and give each
    client ``shards_per_client`` shards drawn at random without replacement."""
    x, y = check_examples(x, y)
    y = check_labels(y)
    num_clients = _check_clients(num_clients, len(x))
    per_client = check_count("shards_per_client", shards_per_client, error=DataError)
    num_shards = num_clients * per_client
    if num_shards > len(x):
        raise DataError(
            f"shards_per_client ({per_client}) times num_clients ({num_clients}) must not "
            f"exceed the number of examples ({len(x)})"
        )
    pieces = np.array_split(np.argsort(y, kind="stable"), num_shards)
    owners = numpy_rng(key).permutation(num_shards).reshape(num_clients, per_client)
    return _assign(x, y, [np.concatenate([pieces[s] for s in row]) for row in owners])


def quantity_skew(
    key: jax.Array,
    x: np.ndarray,
    y: np.ndarray,
    num_clients: int,
    alpha: float,
    min_size: int = 10,
) -> FederatedData:
    """Quantity skew: client sizes in proportions ~ Dir(α), examples uniformly at random.

    Shuffle the ``N`` examples; draw ``p ~ Dir(α·1_C)``; client ``j`` gets ``min_size``
    examples plus piece ``j`` of the ``R = N - C·min_size`` others cut at
    ``floor(cumsum(p)[:-1] · R)``, taking consecutive runs of the shuffled examples. With
    ``min_size=0`` this is NIID-Bench's quantity skew (Li et al. 2022), which instead
    redraws ``p`` until ``min(p)·N >= 10``; reserving ``min_size`` never needs a redraw.
    Smaller ``alpha`` means more unequal sizes.
    """
    x, y = check_examples(x, y)
    num_clients = _check_clients(num_clients, len(x))
    alpha = check_positive("alpha", alpha, error=DataError)
    min_size = _check_min_size(min_size, num_clients, len(x))
    rng = numpy_rng(key)
    order = rng.permutation(len(x))
    rest = len(x) - num_clients * min_size
    cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha))) * rest).astype(np.int64)[:-1]
    sizes = np.diff(cuts, prepend=0, append=rest) + min_size
    return _assign(x, y, np.split(order, np.cumsum(sizes)[:-1]))


def _assign(x: np.ndarray, y: np.ndarray, parts: list[np.ndarray]) -> FederatedData:
    return FederatedData.from_indices(x, y, [np.sort(p) for p in parts])


def _check_clients(num_clients: int, num_examples: int) -> int:
    num_clients = check_count("num_clients", num_clients, error=DataError)
    if num_clients > num_examples:
        raise DataError(
            f"num_clients ({num_clients}) must not exceed the number of examples ({num_examples})"
        )
    return num_clients


def _check_min_size(min_size: int, num_clients: int, num_examples: int) -> int:
    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Integral) or min_size < 0:
        raise DataError(f"min_size must be an integer >= 0, got {min_size!r}")
    if min_size * num_clients > num_examples:
        raise DataError(
            f"min_size ({min_size}) times num_clients ({num_clients}) exceeds the number of "
            f"examples ({num_examples})"
        )
    return int(min_size)


def _unreachable(min_size: int, alpha: float) -> DataError:
    return DataError(
        f"min_size ({min_size}) not reached in {MAX_DRAWS} draws with alpha={alpha}; "
        "lower min_size (0 allows empty clients) or raise alpha"
    )
