"""Who runs in a round: ``Peers(cohort=...)`` as ``k`` slots, each a peer id or ``-1``.

The forms ``cohort`` takes (``count`` is the entry's number of peers):

* ``k``, an int: ``k`` peers drawn uniformly without replacement each round, sorted by id.
* a schedule, an integer array ``[rounds, k]``: round ``r`` runs ``schedule[r]``, in that
  order; ``-1`` leaves a slot empty. Ids are in ``[-1, count)``, distinct within a row.
* a function of the round's cohort key, ``fn(key) -> int[k]`` (jittable): the ids it
  returns, in its order. A slot whose id is outside ``[0, count)`` or repeats an earlier
  slot's id is left empty.
* an availability trace, a bool array ``[rounds, count]`` (``masks[r, i]``: peer ``i`` can
  run in round ``r``) or :class:`Availability` (the trace and a ``k``): with ``k``, ``k`` of
  the round's available peers are drawn uniformly without replacement (all of them, and
  empty slots, when fewer are available); without, every available peer runs, and ``k``
  is the largest number available in any round. Either way the ids are sorted.

An empty slot is nobody: it does not run, receives and sends nothing, and does not count in
the round's metrics. The cohort's shape ``k`` is fixed, so gathers from the entry have a
fixed shape, with the empty slots masked out. Schedules and traces cover the rounds they
have rows for; ``simulate`` refuses a run with more rounds.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.errors import SimulationError

EMPTY = -1
"""The id of an empty cohort slot (and, in peer sets, of no peer)."""


@dataclass(frozen=True)
class Availability:
    """Per-round availability ``masks`` (bool ``[rounds, count]``) and the number ``k`` of
    available peers drawn each round (None: every available peer runs)."""

    masks: Any
    k: int | None = None


@dataclass(frozen=True, eq=False)
class CohortPlan:
    """A ``Peers.cohort`` read once: its ``kind`` (``"draw"``, ``"schedule"``,
    ``"function"`` or ``"available"``), the number of slots ``size``, the schedule or the
    masks as ``table`` (an argument of the round, not a constant of its program), the
    ``function``, and for a trace whether ``size`` of the available peers are ``drawn``."""

    kind: str
    size: int
    table: np.ndarray | None = None
    function: Callable[[jax.Array], jax.Array] | None = None
    drawn: bool = False

    @property
    def rounds(self) -> int | None:
        """How many rounds a schedule or trace covers (None: any number)."""
        return None if self.table is None else int(self.table.shape[0])

    def describe(self) -> Any:
        """What shapes the round program: the int ``k`` of a draw, else a JSON-ready dict
        (kind, size, the table's shape; a function by its qualified name)."""
        if self.kind == "draw":
            return self.size
        described: dict[str, Any] = {"kind": self.kind, "size": self.size,
                                     "drawn": self.drawn}
        if self.table is not None:
            described["table"] = [str(self.table.dtype), list(self.table.shape)]
        if self.function is not None:
            described["function"] = getattr(self.function, "__qualname__", repr(self.function))
        return described

    def ids(self, key: jax.Array, index: jax.Array, table: jax.Array | None,
            count: int) -> jax.Array:
        """The round's slots, int32 ``[size]`` (``-1``: empty), for round ``index`` with the
        cohort key ``key`` and the round's ``table`` (this plan's, as an argument)."""
        if self.kind == "draw":
            ids = jax.random.choice(key, count, (self.size,), replace=False)
            return jnp.sort(ids).astype(jnp.int32)
        if self.kind == "schedule":
            return jnp.asarray(table)[index].astype(jnp.int32)
        if self.kind == "function":
            return _first_in_range(jnp.asarray(self.function(key)).astype(jnp.int32), count)
        return _available(key, jnp.asarray(table)[index], self.size, self.drawn)


def plan_cohort(cohort: Any, count: int) -> CohortPlan | None:
    """``cohort`` (see the module docstring) checked against ``count`` peers; None for
    every peer running. Raises :class:`SimulationError` naming what is wrong."""
    if cohort is None:
        return None
    if _is_int(cohort):
        if not 1 <= cohort <= count:
            raise SimulationError(f"Peers.cohort must be an int in [1, {count}], got {cohort!r}")
        return CohortPlan("draw", int(cohort))
    if isinstance(cohort, Availability):
        return _availability(cohort.masks, cohort.k, count)
    if callable(cohort):
        return _function(cohort, count)
    array = _host_array(cohort, "Peers.cohort")
    if array.ndim == 0:
        raise SimulationError(f"Peers.cohort must be an int in [1, {count}], a schedule, a "
                              f"function or an availability trace, got {cohort!r}")
    if array.dtype == np.bool_:
        return _availability(array, None, count)
    return _schedule(array, count)


def _schedule(array: np.ndarray, count: int) -> CohortPlan:
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer) or 0 in array.shape:
        raise SimulationError(f"a Peers.cohort schedule is a non-empty integer array "
                              f"[rounds, k], got {array.dtype}{list(array.shape)}")
    if array.shape[1] > count:
        raise SimulationError(f"a Peers.cohort schedule has {array.shape[1]} slots per round, "
                              f"more than the {count} peers")
    bad = np.argwhere((array < EMPTY) | (array >= count))
    if bad.size:
        r, j = bad[0]
        raise SimulationError(f"Peers.cohort schedule[{r}, {j}] is {array[r, j]}, not a peer "
                              f"id in [0, {count}) or -1 (an empty slot)")
    for r, row in enumerate(array):
        ids = row[row >= 0]
        if np.unique(ids).size != ids.size:
            raise SimulationError(f"Peers.cohort schedule row {r} repeats a peer: {row.tolist()}")
    return CohortPlan("schedule", int(array.shape[1]), array.astype(np.int32))


def _availability(masks: Any, k: Any, count: int) -> CohortPlan:
    array = _host_array(masks, "Availability.masks")
    if array.dtype != np.bool_ or array.ndim != 2 or array.shape[1] != count \
            or array.shape[0] == 0:
        raise SimulationError(f"an availability trace is a bool array [rounds, {count}], got "
                              f"{array.dtype}{list(array.shape)}")
    most = int(array.sum(axis=1).max())
    if k is None:
        if most == 0:
            raise SimulationError("the availability trace has no peer available in any round")
        return CohortPlan("available", most, array)
    if not _is_int(k) or not 1 <= k <= count:
        raise SimulationError(f"Availability.k must be an int in [1, {count}] or None, got {k!r}")
    return CohortPlan("available", int(k), array, drawn=True)


def _function(fn: Callable, count: int) -> CohortPlan:
    try:
        out = jax.eval_shape(fn, jax.random.PRNGKey(0))
    except Exception as exc:  # the user's function, traced on a key
        raise SimulationError(f"the Peers.cohort function fails on a key: "
                              f"{type(exc).__name__}: {exc}") from exc
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape is None or len(shape) != 1 or not 1 <= shape[0] <= count \
            or not jnp.issubdtype(dtype, jnp.integer):
        raise SimulationError(f"the Peers.cohort function must return k integer ids with k in "
                              f"[1, {count}], got {out}")
    return CohortPlan("function", int(shape[0]), function=fn)


def _first_in_range(ids: jax.Array, count: int) -> jax.Array:
    """``ids`` with ``-1`` where an id is out of ``[0, count)`` or repeats an earlier one."""
    slots = jnp.arange(ids.shape[0], dtype=jnp.int32)
    valid = (ids >= 0) & (ids < count)
    where = jnp.where(valid, ids, count)
    first = jnp.full((count + 1,), ids.shape[0], jnp.int32).at[where].min(slots)
    return jnp.where(valid & (first[where] == slots), ids, EMPTY)


def _available(key: jax.Array, available: jax.Array, k: int, draw: bool) -> jax.Array:
    """``k`` sorted ids among the ``available`` ones (drawn uniformly when ``draw``, else
    the first ``k``, all of them), ``-1`` in the slots left over."""
    count = available.shape[0]
    if draw:
        scores = jnp.where(available, jax.random.uniform(key, (count,)), -1.0)
        _, picked = jax.lax.top_k(scores, k)
        ids = jnp.sort(jnp.where(available[picked], picked, count))
    else:
        (ids,) = jnp.nonzero(available, size=k, fill_value=count)
    return jnp.where(ids < count, ids, EMPTY).astype(jnp.int32)


def _host_array(value: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except Exception as exc:  # an object numpy cannot read
        raise SimulationError(f"{what} must be an array, got {type(value).__name__}") from exc


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
