"""Client selection: which clients take part in a round, as a fixed-shape cohort.

A selector is a :class:`ClientSelector`: the population size, the cohort size, a pure
``select(key, round_index) -> Cohort`` and ``algorithm``, the same selection on the
``bbjax.algorithms`` contract. A :class:`Cohort` always has ``cohort_size`` slots, so the
cohort axis has one static shape under ``jit``, ``vmap`` and ``lax.scan``; slots with
``valid == False`` are padding (fewer eligible clients than slots) and must be ignored by
the aggregation. The same key gives the same cohort.

``algorithm.update(candidates, state, params=None, *, key=None, round=0) -> (mask,
state)`` chooses among the round's candidates (bool ``[num_clients]``, e.g. the clients
that are reachable) and gives the chosen clients' mask; with every client a candidate it
is ``cohort_mask(select(key, round), num_clients)``. Its state is empty.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bbjax._checks import check_count
from bbjax.algorithms.base import Algorithm, EmptyState
from bbjax.errors import SelectionError



class Cohort(NamedTuple):
    """The clients of one round.

    ``indices``: int32 ``(cohort_size,)`` client ids, valid slots first in ascending order.
    ``valid``: bool ``(cohort_size,)``, False for padding slots.
    """

    indices: jax.Array
    valid: jax.Array


class ClientSelector(NamedTuple):
    """``select(key, round_index)`` (jitted) picks a :class:`Cohort` of ``cohort_size``
    slots among ``num_clients`` clients; ``algorithm`` picks the same among candidates."""

    num_clients: int
    cohort_size: int
    select: Callable[[jax.Array, ArrayLike], Cohort]
    algorithm: Algorithm


def cohort_mask(cohort: Cohort, num_clients: int) -> jax.Array:
    """Bool ``(num_clients,)`` mask of the valid clients of ``cohort``."""
    return jnp.zeros(num_clients, bool).at[cohort.indices].max(cohort.valid)



Choose = Callable[[jax.Array | None, jax.Array, jax.Array], Cohort]


def _selector(num_clients: int, cohort_size: int, choose: Choose,
              needs_key: bool) -> ClientSelector:
    """The selector whose cohort among ``candidates`` is ``choose(key, round_index,
    candidates)``."""
    everyone = jnp.ones(num_clients, bool)

    def select(key: jax.Array, round_index: ArrayLike = 0) -> Cohort:
        return choose(key, jnp.asarray(round_index), everyone)

    def init(params: Any) -> EmptyState:
        return EmptyState()

    def update(candidates: ArrayLike, state: EmptyState, params: Any = None, *,
               key: jax.Array | None = None, round: ArrayLike = 0
               ) -> tuple[jax.Array, EmptyState]:
        candidates = jnp.asarray(candidates)
        if candidates.shape != (num_clients,) or candidates.dtype != bool:
            raise SelectionError(f"candidates must be a bool ({num_clients},) mask, got "
                                 f"{candidates.dtype} {candidates.shape}")
        if needs_key and key is None:
            raise SelectionError("this selector draws at random: update(..., key=...)")
        cohort = choose(key, jnp.asarray(round), candidates)
        return cohort_mask(cohort, num_clients), state

    return ClientSelector(num_clients, cohort_size, jax.jit(select),
                          Algorithm(init, update, ("round",)))


def _canonical(indices: jax.Array, valid: jax.Array, num_clients: int) -> Cohort:
    order = jnp.argsort(jnp.where(valid, indices, indices + num_clients))
    return Cohort(indices[order].astype(jnp.int32), valid[order])


def _uniform_among(key: jax.Array, eligible: jax.Array, cohort_size: int) -> Cohort:
    """``cohort_size`` clients drawn uniformly without replacement among ``eligible``;
    padding slots when fewer are eligible."""
    num_clients = eligible.shape[0]
    perm = jax.random.permutation(key, num_clients)
    eligible_first = jnp.argsort(~eligible[perm], stable=True)
    chosen = perm[eligible_first[:cohort_size]]
    return _canonical(chosen, eligible[chosen], num_clients)


def select_all(num_clients: int) -> ClientSelector:
    """Every client (every candidate), every round."""
    num_clients = check_count("num_clients", num_clients, error=SelectionError)

    def choose(key: jax.Array | None, round_index: jax.Array, candidates: jax.Array) -> Cohort:
        return _canonical(jnp.arange(num_clients), candidates, num_clients)

    return _selector(num_clients, num_clients, choose, needs_key=False)


def select_fraction(num_clients: int, fraction: float) -> ClientSelector:
    """A uniform random subset of ``max(1, round(fraction * num_clients))`` clients per
    round, drawn without replacement."""
    num_clients = check_count("num_clients", num_clients, error=SelectionError)
    if not (isinstance(fraction, numbers.Real) and 0.0 < fraction <= 1.0):
        raise SelectionError(f"fraction must be in (0, 1], got {fraction!r}")
    cohort_size = max(1, round(fraction * num_clients))

    def choose(key: jax.Array | None, round_index: jax.Array, candidates: jax.Array) -> Cohort:
        return _uniform_among(key, candidates, cohort_size)

    return _selector(num_clients, cohort_size, choose, needs_key=True)


def select_by_tags(
    client_tags: ArrayLike, required: Sequence[int], cohort_size: int | None = None
) -> ClientSelector:
    """Clients holding every capability tag in ``required``.

    ``client_tags`` is a bool ``(num_clients, num_tags)`` matrix (client ``i`` has tag
    ``t`` iff ``client_tags[i, t]``); ``required`` lists tag columns. With ``cohort_size``
    the cohort is a uniform random subset of that size of the eligible clients; without it,
    the cohort is all eligible clients (``cohort_size = num_clients``, the others padding).
    """
    tags = np.asarray(client_tags)
    if tags.ndim != 2 or tags.dtype != bool:
        raise SelectionError(
            "client_tags must be a bool (num_clients, num_tags) matrix, "
            f"got {tags.dtype} {tags.shape}"
        )
    num_clients, num_tags = tags.shape
    check_count("num_clients", num_clients, error=SelectionError)
    required = tuple(int(t) for t in required)
    bad = [t for t in required if not 0 <= t < num_tags]
    if bad:
        raise SelectionError(f"required tags {bad} are outside the {num_tags} tag columns")
    eligible_np = tags[:, list(required)].all(axis=1)
    if not eligible_np.any():
        raise SelectionError(f"no client holds all required tags {list(required)}")
    eligible = jnp.asarray(eligible_np)
    if cohort_size is None:

        def every_eligible(key: jax.Array | None, round_index: jax.Array,
                           candidates: jax.Array) -> Cohort:
            return _canonical(jnp.arange(num_clients), eligible & candidates, num_clients)

        return _selector(num_clients, num_clients, every_eligible, needs_key=False)

    cohort_size = check_count("cohort_size", cohort_size, error=SelectionError, upper=num_clients)

    def choose(key: jax.Array | None, round_index: jax.Array, candidates: jax.Array) -> Cohort:
        return _uniform_among(key, eligible & candidates, cohort_size)

    return _selector(num_clients, cohort_size, choose, needs_key=True)


def select_available(
    num_clients: int,
    availability: ArrayLike | Callable[[jax.Array], jax.Array],
    cohort_size: int | None = None,
) -> ClientSelector:
    """Clients that are online this round, then (optionally) a uniform subset of them.

    Each round, client ``i`` is online independently with probability ``p_i``, where ``p``
    is ``availability`` (float ``(num_clients,)`` in [0, 1]) or ``availability(round_index)``
    (a jittable function returning that vector, e.g. a diurnal pattern). With
    ``cohort_size`` the cohort is a uniform random subset of that size of the online
    clients; without it, all online clients (with constant ``p_i = q`` this is Poisson
    sampling at rate ``q``, the sampling the privacy accountant assumes).
    """
    num_clients = check_count("num_clients", num_clients, error=SelectionError)
    if callable(availability):
        probabilities = availability
        out = jax.eval_shape(availability, jnp.int32(0))
        if out.shape != (num_clients,):
            raise SelectionError(
                f"availability(round_index) must return shape ({num_clients},), got {out.shape}"
            )
    else:
        p = np.asarray(availability, dtype=np.float64)
        if p.shape != (num_clients,):
            raise SelectionError(f"availability must have shape ({num_clients},), got {p.shape}")
        if not np.all((p >= 0.0) & (p <= 1.0)):
            raise SelectionError("availability probabilities must lie in [0, 1]")
        constant = jnp.asarray(p, jnp.float32)

        def probabilities(round_index: jax.Array) -> jax.Array:
            del round_index
            return constant

    size = (
        num_clients
        if cohort_size is None
        else check_count("cohort_size", cohort_size, error=SelectionError, upper=num_clients)
    )

    def choose(key: jax.Array | None, round_index: jax.Array, candidates: jax.Array) -> Cohort:
        online_key, pick_key = jax.random.split(key)
        online = candidates & (jax.random.uniform(online_key, (num_clients,))
                               < probabilities(round_index))
        if cohort_size is None:
            return _canonical(jnp.arange(num_clients), online, num_clients)
        return _uniform_among(pick_key, online, size)

    return _selector(num_clients, size, choose, needs_key=True)
