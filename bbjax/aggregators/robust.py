"""Byzantine-robust rules: coordinate-wise median and trimmed mean, Krum / Multi-Krum and
Bulyan, as Flower's ``FedMedian``, ``FedTrimmedAvg``, ``Krum`` and ``Bulyan`` compute them.

Absent and rejected clients are set aside before any order statistic or distance is
taken, so they are never selected and never counted (see :mod:`bbjax.aggregators.base`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from bbjax.aggregators.base import (Aggregator, Cohort, Params, Reduced, aggregation_rule,
                                    check_max_weight, check_nonnegative_int, count, leafwise,
                                    mean_coefficients, require)
from bbjax.algorithms.base import EmptyState
from bbjax.aggregators.columns import client_sum, gram, map_columns, sort_clients


def _sorted_present(block: jax.Array, present: jax.Array) -> jax.Array:
    """``block`` sorted along the client axis with the absent clients last (as +inf)."""
    return sort_clients(jnp.where(present[:, None], block, jnp.inf))


def _middle(s: jax.Array, m: jax.Array) -> jax.Array:
    """Median of the first ``m`` rows of the sorted block ``s`` (mean of the two middle ones
    when ``m`` is even, as ``np.median``)."""
    lo = lax.dynamic_index_in_dim(s, jnp.maximum(m - 1, 0) // 2, 0, keepdims=False)
    hi = lax.dynamic_index_in_dim(s, m // 2, 0, keepdims=False)
    return (lo + hi) / 2


def _stateless(rule: str, combine: Any, max_weight: float | None) -> Aggregator:
    """A rule whose result is ``combine(n, stack, origin, weights, present)`` returning
    ``(point, skip)`` in the frame of ``stack`` (see :func:`aggregation_rule`)."""
    max_weight = check_max_weight(rule, max_weight)

    def init(global_params: Params) -> EmptyState:
        return EmptyState()

    def reduce(state: EmptyState, cohort: Cohort, params: Params, stack: Params,
               origin: Params | None) -> Reduced:
        point, skip = combine(cohort.n, stack, origin, cohort.weights, cohort.present)
        return Reduced(point, state, cohort.present, skip)

    return aggregation_rule(rule, init, reduce, max_weight)


def median(max_weight: float | None = None) -> Aggregator:
    """Coordinate-wise median of the present clients, unweighted (Flower ``FedMedian``)."""

    def combine(n, client_params, origin, weights, present):
        m = count(present)
        new = jax.tree.map(
            lambda x: map_columns(lambda b: _middle(_sorted_present(b, present), m), x),
            client_params)
        return new, m == 0

    return _stateless("median", combine, max_weight)


def trimmed_mean(proportion: float = 0.2, max_weight: float | None = None) -> Aggregator:
    """Coordinate-wise mean after cutting ``int(proportion * m)`` of the ``m`` present values
    from each end, unweighted (Flower ``FedTrimmedAvg(beta)``, Yin et al. 2018)."""
    require(0 <= proportion < 0.5,
            f"trimmed_mean: proportion must be in [0, 0.5), got {proportion!r}")

    def combine(n, client_params, origin, weights, present):
        m = count(present)
        # Flower's int(proportion * m), exact in float64, for every possible m.
        cut = jnp.asarray([int(proportion * k) for k in range(n + 1)], jnp.int32)[m]
        rank = jnp.arange(n)[:, None]
        kept = (rank >= cut) & (rank < m - cut)

        def column(b):
            s = _sorted_present(b, present)
            return jnp.sum(jnp.where(kept, s, 0), axis=0) / (m - 2 * cut).astype(s.dtype)

        return jax.tree.map(lambda x: map_columns(column, x), client_params), m == 0

    return _stateless("trimmed_mean", combine, max_weight)


def _distances(client_params: Params, origin: Params | None, present: jax.Array) -> jax.Array:
    """``[n, n]`` squared L2 distances between present clients over all leaves; +inf on the
    diagonal, for absent clients and where the float range overflows. ``origin`` (None:
    zero) only shifts the Gram matrix's centre."""
    g = sum(jax.tree.leaves(leafwise(gram, client_params, origin)))
    sq = jnp.diag(g)
    d = jnp.maximum(sq[:, None] + sq[None, :] - 2 * g, 0)
    n = d.shape[0]
    keep = present[:, None] & present[None, :] & ~jnp.eye(n, dtype=bool) & ~jnp.isnan(d)
    return jnp.where(keep, d, jnp.inf)


class _KrumScorer:
    """Krum scores of a shrinking set of clients (Flower's ``aggregate_krum`` inner loop).

    The score of client ``i`` in a set of ``r`` clients is the sum of its
    ``max(1, r - f - 2)`` smallest distances to the others. Rows of the distance matrix are
    sorted once; removing a client then updates ranks in O(n^2).
    """

    def __init__(self, distances: jax.Array, num_malicious: int):
        n = distances.shape[0]
        self.f = num_malicious
        self.order = jnp.argsort(distances, axis=1)
        self.sorted = jnp.take_along_axis(distances, self.order, axis=1)
        cols = jnp.arange(n)
        self.position = jnp.zeros((n, n), jnp.int32).at[cols[:, None], self.order].set(cols)
        self.cols = cols[None, :]

    def start(self, members: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(others, rank)``: per row, in sorted order, which entries are members other than
        the row's own client, and their 1-based rank among those."""
        others = members[self.order] & (self.order != jnp.arange(members.shape[0])[:, None])
        return others, jnp.cumsum(others, axis=1)

    def scores(self, members: jax.Array, others: jax.Array, rank: jax.Array) -> jax.Array:
        k = jnp.maximum(1, count(members) - self.f - 2)
        s = jnp.sum(jnp.where(others & (rank <= k), self.sorted, 0), axis=1)
        return jnp.where(members, s, jnp.inf)

    def best(self, members: jax.Array, others: jax.Array, rank: jax.Array) -> jax.Array:
        """The lowest-scored member, the lowest index on ties (also when every member's
        score overflowed to +inf)."""
        best = jnp.argmin(self.scores(members, others, rank))
        return jnp.where(members[best], best, jnp.argmax(members))

    def remove(self, client: jax.Array, others: jax.Array, rank: jax.Array,
               active: jax.Array) -> tuple[jax.Array, jax.Array]:
        pos = self.position[:, client][:, None]
        others = others & ~((self.cols == pos) & active)
        return others, rank - ((self.cols >= pos) & active)


def krum(num_malicious: int = 0, num_to_keep: int = 0,
         max_weight: float | None = None) -> Aggregator:
    """Krum (Blanchard et al. 2017; Flower ``Krum(num_malicious_clients,
    num_clients_to_keep)``).

    Scores each present client by the sum of its ``m - f - 2`` smallest squared distances
    to the others and returns the lowest-scored client's parameters; with
    ``num_to_keep > 0`` (Multi-Krum) returns the ``weights``-weighted mean of the
    ``num_to_keep`` lowest-scored clients. Needs a cohort of ``n >= 2f + 3``; a round with
    fewer than ``2f + 3`` present clients is skipped.
    """
    check_nonnegative_int("krum", "num_malicious", num_malicious)
    check_nonnegative_int("krum", "num_to_keep", num_to_keep)
    f = num_malicious

    def combine(n, client_params, origin, weights, present):
        require(n >= 2 * f + 3, f"krum(num_malicious={f}) needs a cohort of at least "
                f"2*{f}+3 = {2 * f + 3} clients, got {n}")
        require(num_to_keep <= n, f"krum: num_to_keep={num_to_keep} exceeds the cohort of {n}")
        scorer = _KrumScorer(_distances(client_params, origin, present), f)
        skip = count(present) < 2 * f + 3
        if num_to_keep == 0:
            best = scorer.best(present, *scorer.start(present))
            new = jax.tree.map(lambda x: lax.dynamic_index_in_dim(x, best, 0, keepdims=False),
                               client_params)
            return new, skip
        rank = jnp.argsort(jnp.argsort(scorer.scores(present, *scorer.start(present))))
        kept = present & (rank < num_to_keep)
        coef, empty = mean_coefficients(weights, kept)
        new = jax.tree.map(lambda x: client_sum(coef, x, kept), client_params)
        return new, skip | empty

    return _stateless("krum", combine, max_weight)


def bulyan(num_malicious: int = 0, max_weight: float | None = None) -> Aggregator:
    """Bulyan over Krum (El Mhamdi et al. 2018; Flower ``Bulyan(num_malicious_clients)``).

    With ``m`` present clients: pick ``theta = m - 2f`` of them by repeated Krum (each time
    the lowest Krum score among those left, ties to the lowest index); then, per coordinate,
    average the ``beta = theta - 2f`` picked values closest to their median. Needs a cohort
    of ``n >= 4f + 3``; a round with fewer than ``4f + 3`` present clients is skipped.
    ``weights`` only decide rejection. For ``f <= 2`` the last picks score each client by
    its single nearest neighbour, so a mutually nearest pair ties and the pick depends on
    client order, as in Flower.
    """
    check_nonnegative_int("bulyan", "num_malicious", num_malicious)
    f = num_malicious

    def combine(n, client_params, origin, weights, present):
        require(n >= 4 * f + 3, f"bulyan(num_malicious={f}) needs a cohort of at least "
                f"4*{f}+3 = {4 * f + 3} clients, got {n}")
        m = count(present)
        theta, beta = m - 2 * f, m - 4 * f
        scorer = _KrumScorer(_distances(client_params, origin, present), f)

        def pick(t, carry):
            left, picked, others, rank = carry
            best = scorer.best(left, others, rank)
            active = t < theta
            chosen = (jnp.arange(n) == best) & active
            others, rank = scorer.remove(best, others, rank, active)
            return left & ~chosen, picked | chosen, others, rank

        carry = (present, jnp.zeros((n,), bool), *scorer.start(present))
        picked = lax.fori_loop(0, n - 2 * f, pick, carry)[1]

        def column(b):
            s = _sorted_present(b, picked)
            med = _middle(s, theta)
            # The beta values closest to med are a window of the sorted ones; take the
            # window of smallest radius (first on ties).
            last = lax.dynamic_slice_in_dim(
                jnp.concatenate([s, jnp.full_like(s, jnp.inf)]), beta - 1, n, axis=0)
            start = jnp.argmin(jnp.maximum(med - s, last - med), axis=0)
            rank = jnp.arange(n)[:, None]
            window = (rank >= start) & (rank < start + beta)
            return jnp.sum(jnp.where(window, s, 0), axis=0) / beta.astype(s.dtype)

        new = jax.tree.map(lambda x: map_columns(column, x), client_params)
        return new, m < 4 * f + 3

    return _stateless("bulyan", combine, max_weight)
