"""Communication graphs for decentralized training and their mixing matrices.

A :class:`Topology` is in the simulation engine's layout: ``neighbours`` is the int
``[N, k]`` array ``Peers(count, neighbours=...)`` takes (row ``i``: the peers whose messages
peer ``i`` receives, -1 padding), ``weights[t % T]`` the matching entries of round ``t``'s
mixing matrix. Constructors are host-side numpy; randomness comes from an explicit seed.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.errors import TopologyError
from bbjax.strategies.decentralized import _base_graph
from bbjax.strategies.decentralized._neighbours import (
    EMPTY,
    neighbour_array,
    pad_rows,
    reverse_slots,
)
from bbjax.strategies.decentralized.mixing import RULES

_TOLERANCE = 1e-5


@dataclass(frozen=True, eq=False, repr=False)
class Topology:
    """A graph and its mixing matrices ``W_t`` (``x <- W_t x`` mixes round ``t``).

    ``neighbours``: int32 ``[N, k]`` in-neighbours, -1 = none. ``weights``: float32
    ``[T, N, k]``, ``W_t[i, neighbours[i, j]] = weights[t % T, i, j]``, 0 on padding.
    ``self_weights``: float32 ``[T, N]``, ``W_t[i, i]``. ``directed``: ``W_t`` is only known to
    be column-stochastic (push-sum); else it is symmetric and doubly stochastic. Static graphs
    have ``T = 1``; a time-varying one lists the union of its rounds' neighbours and zeroes the
    edges a round does not use. Given float64 weights are kept for :meth:`matrix`. Raises
    :class:`TopologyError` for arrays of the wrong dtype or shape, or weights that are not
    (column- or doubly) stochastic.
    """

    name: str
    neighbours: np.ndarray
    weights: np.ndarray
    self_weights: np.ndarray
    directed: bool

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TopologyError(f"Topology.name must be a str, got {self.name!r}")
        if not isinstance(self.directed, (bool, np.bool_)):
            raise TopologyError(f"Topology.directed must be a bool, got {self.directed!r}")
        neighbours = neighbour_array(self.neighbours, what="Topology.neighbours")
        count, k = neighbours.shape
        weights = _float_array("weights", self.weights, 3, (count, k))
        period = weights.shape[0]
        self_weights = _float_array("self_weights", self.self_weights, 2, (count,))
        if self_weights.shape[0] != period:
            raise TopologyError(f"Topology.self_weights has {self_weights.shape[0]} rounds, "
                                f"weights has {period}")
        padding = np.broadcast_to(neighbours == EMPTY, weights.shape)
        if np.any(weights[padding] != 0):
            raise TopologyError("Topology.weights must be 0 where neighbours is -1 (padding)")
        _check_stochastic(neighbours, weights, self_weights, bool(self.directed))
        for field, value in (("neighbours", neighbours.astype(np.int32)),
                             ("weights", weights.astype(np.float32)),
                             ("self_weights", self_weights.astype(np.float32)),
                             ("_weights64", weights), ("_self_weights64", self_weights),
                             ("directed", bool(self.directed))):
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
            object.__setattr__(self, field, value)

    @property
    def count(self) -> int:
        """The number of nodes N."""
        return self.neighbours.shape[0]

    @property
    def k(self) -> int:
        """The width of ``neighbours``: the most neighbours a node has over all rounds."""
        return self.neighbours.shape[1]

    @property
    def period(self) -> int:
        """T: round ``t`` uses the weights of ``t % T``."""
        return self.weights.shape[0]

    @property
    def doubly_stochastic(self) -> bool:
        """Every round's ``W`` also has rows summing to 1, so plain gossip ``x <- W x`` keeps
        the mean and reaches it (true of every undirected topology and of the exponential
        graphs, not of push-sum weights in general)."""
        rows = self._self_weights64 + self._weights64.sum(axis=2)
        return bool(np.all(np.abs(rows - 1.0) <= _TOLERANCE))

    def matrix(self, round: int = 0) -> np.ndarray:
        """The dense float64 ``[N, N]`` mixing matrix of ``round`` (for tests and small N)."""
        if isinstance(round, bool) or not isinstance(round, numbers.Integral):
            raise TopologyError(f"round must be an integer, got {round!r}")
        t = int(round) % self.period
        matrix = np.zeros((self.count, self.count))
        rows, slots = np.nonzero(self.neighbours != EMPTY)
        matrix[rows, self.neighbours[rows, slots]] = self._weights64[t, rows, slots]
        matrix[np.arange(self.count), np.arange(self.count)] = self._self_weights64[t]
        return matrix

    def weights_at(self, round: Any) -> tuple[jax.Array, jax.Array]:
        """``(weights [N, k], self_weights [N])`` of ``round`` (an int or a traced int scalar)
        as float32 jax arrays; jittable."""
        index = jnp.asarray(round)
        if index.ndim != 0 or not jnp.issubdtype(index.dtype, jnp.integer):
            raise TopologyError(f"round must be an integer scalar, got {index.dtype}"
                                f"{list(index.shape)}")
        t = index % self.period
        return (jnp.take(jnp.asarray(self.weights), t, axis=0),
                jnp.take(jnp.asarray(self.self_weights), t, axis=0))

    def __repr__(self) -> str:
        return (f"Topology(name={self.name!r}, count={self.count}, k={self.k}, "
                f"period={self.period}, directed={self.directed})")


def _float_array(field: str, value: Any, ndim: int, tail: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating) or array.ndim != ndim \
            or array.shape[1:] != tail or array.shape[0] < 1:
        shape = ", ".join(["T", *map(str, tail)])
        raise TopologyError(f"Topology.{field} must be a float array [{shape}] with T >= 1, "
                            f"got {array.dtype}{list(array.shape)}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise TopologyError(f"Topology.{field} has non-finite entries")
    return array


def _check_stochastic(neighbours: np.ndarray, weights: np.ndarray, self_weights: np.ndarray,
                      directed: bool) -> None:
    if directed:
        columns = self_weights.copy()
        rows, slots = np.nonzero(neighbours != EMPTY)
        for t in range(weights.shape[0]):
            np.add.at(columns[t], neighbours[rows, slots], weights[t, rows, slots])
        bad = np.argwhere(np.abs(columns - 1.0) > _TOLERANCE)
        if bad.size:
            t, j = bad[0]
            raise TopologyError(f"a directed Topology's W must be column-stochastic: column {j} "
                                f"of round {t} sums to {columns[t, j]:.6g}")
        return
    sums = self_weights + weights.sum(axis=2)
    bad = np.argwhere(np.abs(sums - 1.0) > _TOLERANCE)
    if bad.size:
        t, i = bad[0]
        raise TopologyError(f"an undirected Topology's W must be doubly stochastic: row {i} of "
                            f"round {t} sums to {sums[t, i]:.6g}")
    reverse = reverse_slots(neighbours)
    mirrored = np.where(reverse != EMPTY,
                        weights[:, np.where(neighbours != EMPTY, neighbours, 0),
                                np.maximum(reverse, 0)], 0.0)
    bad = np.argwhere(np.abs(weights - mirrored) > _TOLERANCE)
    if bad.size:
        t, i, s = bad[0]
        raise TopologyError(f"an undirected Topology's W must be symmetric: W[{i}, "
                            f"{neighbours[i, s]}] != W[{neighbours[i, s]}, {i}] in round {t}")


def from_neighbours(neighbours: Any, weights: str = "metropolis_hastings", *,
                    name: str = "custom") -> Topology:
    """A static topology on a given in-neighbour array (int ``[N, k]``, -1 padding).

    ``weights``: ``"metropolis_hastings"`` or ``"uniform"`` (undirected: ``neighbours`` must be
    symmetric) or ``"push_sum"`` (a directed, column-stochastic ``W``); see
    :mod:`bbjax.strategies.decentralized.mixing`.
    """
    if weights not in RULES:
        raise TopologyError(f"weights must be one of {sorted(RULES)}, got {weights!r}")
    array = neighbour_array(neighbours)
    edge_weights, self_weights = RULES[weights](array)
    return Topology(name, array, edge_weights[None], self_weights[None],
                    directed=weights == "push_sum")


def ring(n: int) -> Topology:
    """The cycle ``i - 1, i, i + 1 (mod n)``, weights 1/3 (1/2 for n = 2)."""
    n = _count("n", n)
    return from_neighbours(pad_rows([sorted({(i - 1) % n, (i + 1) % n}) for i in range(n)]),
                           name=f"ring({n})")


def torus(rows: int, cols: int) -> Topology:
    """The 2-D ``rows x cols`` torus: node ``r * cols + c`` and its 4 neighbours
    ``(r +- 1, c)``, ``(r, c +- 1)`` (mod each side; 3 or 2 when a side is 2); weights
    ``1 / (degree + 1)``."""
    rows, cols = _count("rows", rows), _count("cols", cols)
    adjacency = [sorted({((r + dr) % rows) * cols + (c + dc) % cols
                         for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))})
                 for r in range(rows) for c in range(cols)]
    return from_neighbours(pad_rows(adjacency), name=f"torus({rows}x{cols})")


def complete(n: int) -> Topology:
    """Every node hears every other; ``W = 11^T / n``: exact averaging in one round."""
    n = _count("n", n)
    return from_neighbours(pad_rows([[j for j in range(n) if j != i] for i in range(n)]),
                           name=f"complete({n})")


def random_regular(n: int, k: int, seed: int | np.random.Generator) -> Topology:
    """A random simple ``k``-regular graph on ``n`` nodes (``n * k`` even, ``1 <= k < n``),
    weights ``1 / (k + 1)``; the same seed gives the same graph.

    With ``d = min(k, n - 1 - k)`` (a graph with ``k > (n - 1) / 2`` is the complement of a
    ``d``-regular one): for ``d <= 6`` it is exactly uniform over all such graphs (the pairing
    model, rejecting pairings with a loop or a double edge; expected tries about
    ``exp((d^2 - 1) / 4)``); for larger ``d`` it is the Steger-Wormald sequential pairing
    (asymptotically uniform, what ``networkx.random_regular_graph`` does).
    """
    n = _count("n", n)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k < n:
        raise TopologyError(f"k must be an integer in [1, {n - 1}] for n = {n}, got {k!r}")
    if n * k % 2:
        raise TopologyError(f"n * k must be even for a k-regular graph, got n = {n}, k = {k}")
    rng = _rng(seed)
    degree = min(int(k), n - 1 - int(k))
    u = v = np.zeros(0, np.int64)
    if degree:
        u, v = (_pairing if degree <= 6 else _sequential_pairing)(n, degree, rng)
    receivers, senders = np.concatenate([u, v]), np.concatenate([v, u])
    order = np.lexsort((senders, receivers))
    neighbours = senders[order].reshape(n, degree)
    if degree != k:
        adjacency = np.ones((n, n), dtype=bool)
        adjacency[receivers, senders] = False
        np.fill_diagonal(adjacency, False)
        neighbours = np.nonzero(adjacency)[1].reshape(n, int(k))
    return from_neighbours(neighbours, name=f"random_regular({n}, {k})")


def _pairing(n: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform pairings of ``k`` points per node until one has no loop and no double edge."""
    points = np.repeat(np.arange(n), k)
    while True:
        u, v = rng.permutation(points).reshape(-1, 2).T
        low, high = np.minimum(u, v), np.maximum(u, v)
        if np.all(low != high) and np.unique(low * n + high).size == low.size:
            return u, v


def _sequential_pairing(n: int, k: int, rng: np.random.Generator
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Steger-Wormald: pair shuffled free points, keep the pairs that make a new edge, repeat
    on the rest; start over when no new edge is possible among the nodes left."""
    while True:
        edges: set[tuple[int, int]] = set()
        free = np.repeat(np.arange(n), k)
        while free.size:
            left = []
            for a, b in rng.permutation(free).reshape(-1, 2).tolist():
                edge = (min(a, b), max(a, b))
                if a != b and edge not in edges:
                    edges.add(edge)
                else:
                    left += [a, b]
            free = np.asarray(left, dtype=np.int64)
            nodes = np.unique(free)
            if free.size and not any((a, b) not in edges for i, a in enumerate(nodes.tolist())
                                     for b in nodes[i + 1:].tolist()):
                break
        else:
            u, v = np.asarray(sorted(edges)).T
            return u, v


def exponential(n: int) -> Topology:
    """The static exponential graph of Ying et al. (2021), directed: node ``i`` hears
    ``i + 2^j (mod n)`` for ``j = 0 .. tau - 1``, ``tau = ceil(log2 n)``, all weights (self
    included) ``1 / (tau + 1)``. ``W`` is circulant and doubly stochastic but not symmetric
    (so ``directed``); mirrored (``i +- 2^j``) it would be the undirected exponential graph."""
    n = _count("n", n)
    tau = _log2_ceil(n)
    hops = [2 ** j for j in range(tau)]
    neighbours = (np.arange(n)[:, None] + np.asarray(hops)[None, :]) % n
    return Topology(f"exponential({n})", neighbours,
                    np.full((1, n, tau), 1.0 / (tau + 1)), np.full((1, n), 1.0 / (tau + 1)),
                    directed=True)


def one_peer_exponential(n: int) -> Topology:
    """The one-peer exponential graph of Ying et al. (2021), time-varying with period
    ``tau = ceil(log2 n)``: at round ``t`` node ``i`` averages (weights 1/2) with
    ``i + 2^(t mod tau) (mod n)`` only. ``W_t`` is doubly stochastic, not symmetric
    (``directed``); for ``n`` a power of two any ``tau`` consecutive rounds average exactly."""
    n = _count("n", n)
    tau = _log2_ceil(n)
    nodes = np.arange(n)
    rounds = [(nodes, (nodes + 2 ** t) % n, np.full(n, 0.5)) for t in range(tau)]
    return _time_varying(f"one_peer_exponential({n})", n, rounds, directed=True)


def base_graph(n: int, k: int) -> Topology:
    """The Base-(k+1) graph of Takezawa, Sato, Niwa, Yamada (NeurIPS 2023), time-varying:
    a finite sequence of symmetric graphs, each node with at most ``k`` neighbours per round,
    whose mixing matrices multiply to exactly ``11^T / n`` over one period, for any ``n``
    (``1 <= k < n``; ``k = n - 1`` is the complete graph). See
    :mod:`bbjax.strategies.decentralized._base_graph` for the construction."""
    n = _count("n", n)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k < n:
        raise TopologyError(f"k must be an integer in [1, {n - 1}] for n = {n}, got {k!r}")
    rounds = _base_graph.rounds(n, int(k))
    return _time_varying(f"base_graph({n}, {k})", n, rounds, directed=False)


def _time_varying(name: str, n: int, rounds: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                  *, directed: bool) -> Topology:
    """A topology from per-round entries ``W_t[i, j] = w`` (``(i, j, w)`` arrays, ``i != j``);
    each round's self weights make its rows sum to 1."""
    codes = np.unique(np.concatenate([i * n + j for i, j, _ in rounds]))
    receivers, senders = codes // n, codes % n
    first = np.searchsorted(receivers, np.arange(n))
    slots = np.arange(codes.size) - first[receivers]
    width = int(slots.max()) + 1
    neighbours = np.full((n, width), EMPTY, dtype=np.int64)
    neighbours[receivers, slots] = senders
    weights = np.zeros((len(rounds), n, width))
    for t, (i, j, w) in enumerate(rounds):
        weights[t, i, slots[np.searchsorted(codes, i * n + j)]] = w
    return Topology(name, neighbours, weights, 1.0 - weights.sum(axis=2), directed=directed)


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2:
        raise TopologyError(f"{name} must be an integer >= 2, got {value!r}")
    return int(value)


def _log2_ceil(n: int) -> int:
    return (n - 1).bit_length()


def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TopologyError(f"seed must be an integer >= 0 or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))
