"""Mixing weights: the rules that turn a neighbour structure into a gossip matrix ``W``, and
the spectral quantities that say how fast ``x <- W x`` reaches the mean.

A rule takes an in-neighbour array (int ``[N, k]``, -1 padding) and returns float64
``(weights [N, k], self_weights [N])`` with ``W[i, neighbours[i, j]] = weights[i, j]`` and
``W[i, i] = self_weights[i]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from bbjax.errors import TopologyError
from bbjax.strategies.decentralized._neighbours import (
    EMPTY,
    degrees,
    neighbour_array,
    reverse_slots,
)

if TYPE_CHECKING:
    from bbjax.strategies.decentralized.topology import Topology


def _undirected(neighbours: Any) -> np.ndarray:
    array = neighbour_array(neighbours)
    reverse = reverse_slots(array)
    missing = np.argwhere((array != EMPTY) & (reverse == EMPTY))
    if missing.size:
        i, j = missing[0]
        raise TopologyError(f"an undirected rule needs symmetric neighbours: row {i} lists "
                            f"{array[i, j]} but row {array[i, j]} does not list {i}")
    return array


def uniform(neighbours: Any) -> tuple[np.ndarray, np.ndarray]:
    """``w_ij = 1 / (d_max + 1)`` on every edge of an undirected graph, the rest of each row on
    its node (``d_max``: the largest degree). Symmetric and doubly stochastic."""
    array = _undirected(neighbours)
    degree = degrees(array)
    share = 1.0 / (degree.max() + 1.0)
    weights = np.where(array != EMPTY, share, 0.0)
    return weights, 1.0 - degree * share


def metropolis_hastings(neighbours: Any) -> tuple[np.ndarray, np.ndarray]:
    """``w_ij = 1 / (1 + max(d_i, d_j))`` on every edge of an undirected graph,
    ``w_ii = 1 - sum_j w_ij``. Symmetric and doubly stochastic."""
    array = _undirected(neighbours)
    degree = degrees(array)
    other = degree[np.where(array != EMPTY, array, 0)]
    weights = np.where(array != EMPTY, 1.0 / (1.0 + np.maximum(degree[:, None], other)), 0.0)
    return weights, 1.0 - weights.sum(axis=1)


def push_sum_weights(neighbours: Any) -> tuple[np.ndarray, np.ndarray]:
    """Column-stochastic weights of a directed graph given by in-neighbours: node ``j`` splits
    its mass equally over itself and its out-neighbours (the rows that list ``j``), so
    ``w_ij = w_jj = 1 / (1 + out_degree(j))``."""
    array = neighbour_array(neighbours)
    out_degree = np.bincount(array[array != EMPTY], minlength=array.shape[0])
    share = 1.0 / (1.0 + out_degree)
    weights = np.where(array != EMPTY, share[np.where(array != EMPTY, array, 0)], 0.0)
    return weights, share


RULES = {"uniform": uniform, "metropolis_hastings": metropolis_hastings,
         "push_sum": push_sum_weights}


def second_largest_eigenvalue_modulus(topology: Topology) -> float:
    """The second largest ``|eigenvalue|`` of ``W`` (of the period's product
    ``W_{T-1} ... W_0`` for a time-varying topology): the asymptotic factor by which the
    distance to consensus shrinks per round (per period). Dense numpy, for tests and small N."""
    product = topology.matrix(0)
    for t in range(1, topology.period):
        product = topology.matrix(t) @ product
    modulus = np.sort(np.abs(np.linalg.eigvals(product)))
    return float(modulus[-2])


def spectral_gap(topology: Topology) -> float:
    """``1 - second_largest_eigenvalue_modulus(topology)``; 0 for a disconnected graph."""
    return 1.0 - second_largest_eigenvalue_modulus(topology)
