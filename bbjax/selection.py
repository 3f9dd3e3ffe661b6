"""Client selection: which clients take part in a round, as a fixed-shape cohort.

A selector is a :class:`ClientSelector`: the population size, the cohort size and a pure
``select(key, round_index) -> Cohort``. A :class:`Cohort` always has ``cohort_size`` slots,
so the cohort axis has one static shape under ``jit``, ``vmap`` and ``lax.scan``; slots
with ``valid == False`` are padding (fewer eligible clients than slots) and must be
ignored by the aggregation. The same key gives the same cohort.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bbjax._checks import check_count
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
    slots among ``num_clients`` clients."""

    num_clients: int
    cohort_size: int
    select: Callable[[jax.Array, ArrayLike], Cohort]


def cohort_mask(cohort: Cohort, num_clients: int) -> jax.Array:
    """Bool ``(num_clients,)`` mask of the valid clients of ``cohort``."""
    return jnp.zeros(num_clients, bool).at[cohort.indices].max(cohort.valid)



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
    """Every client, every round."""
    num_clients = check_count("num_clients", num_clients, error=SelectionError)

    def select(key: jax.Array, round_index: ArrayLike = 0) -> Cohort:
        del key, round_index
        return Cohort(jnp.arange(num_clients, dtype=jnp.int32), jnp.ones(num_clients, bool))

    return ClientSelector(num_clients, num_clients, jax.jit(select))


def select_fraction(num_clients: int, fraction: float) -> ClientSelector:
    """A uniform random subset of ``max(1, round(fraction * num_clients))`` clients per
    round, drawn without replacement."""
    num_clients = check_count("num_clients", num_clients, error=SelectionError)
    if not (isinstance(fraction, numbers.Real) and 0.0 < fraction <= 1.0):
        raise SelectionError(f"fraction must be in (0, 1], got {fraction!r}")
    cohort_size = max(1, round(fraction * num_clients))

    def select(key: jax.Array, round_index: ArrayLike = 0) -> Cohort:
        del round_index
        return _uniform_among(key, jnp.ones(num_clients, bool), cohort_size)

    return ClientSelector(num_clients, cohort_size, jax.jit(select))


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

        def select(key: jax.Array, round_index: ArrayLike = 0) -> Cohort:
            del key, round_index
            return _canonical(jnp.arange(num_clients), eligible, num_clients)

        return ClientSelector(num_clients, num_clients, jax.jit(select))

    cohort_size = check_count("cohort_size", cohort_size, error=SelectionError, upper=num_clients)

    def select(key: jax.Array, round_index: ArrayLike = 0) -> Cohort:
        del round_index
        return _uniform_among(key, eligible, cohort_size)

    return ClientSelector(num_clients, cohort_size, jax.jit(select))


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

    def select(key: jax.Array, round_index: ArrayLike = 0) -> Cohort:
        online_key, pick_key = jax.random.split(key)
        p = probabilities(jnp.asarray(round_index))
        online = jax.random.uniform(online_key, (num_clients,)) < p
        if cohort_size is None:
            return _canonical(jnp.arange(num_clients), online, num_clients)
        return _uniform_among(pick_key, online, size)

    return ClientSelector(num_clients, size, jax.jit(select))
