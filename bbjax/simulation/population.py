"""``Peers``: how many peers play a class in a simulation, and what each one starts with."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

import jax
import numpy as np

from bbjax.compiler import annotations as ann
from bbjax.errors import SimulationError
from bbjax.simulation.cohort import EMPTY, CohortPlan, plan_cohort


@dataclass(frozen=True)
class Peers:
    """``count`` peers of one class.

    ``init_args`` maps a slot to the extra arguments of its component's ``init(key, *args)``,
    each leaf with a leading ``[count]`` axis (peer ``i`` gets row ``i``: its data shard,
    say). ``inputs`` maps a graph input of the class's partitions to a ``[count, ...]``
    array. ``cohort``: who runs each round (default: everyone): ``k`` peers drawn uniformly
    without replacement, a schedule ``[rounds, k]`` of ids, a function of the round's
    cohort key returning ``k`` ids, or an availability trace (a bool ``[rounds, count]``
    array or :class:`~bbjax.simulation.cohort.Availability`); see
    :mod:`bbjax.simulation.cohort`. ``dropout``: the probability that a running peer's
    messages of a round are lost. ``hosts``: further peer classes these same peers play
    (sharing their slot states), e.g. ``("self",)`` for the round's initiator.
    ``neighbours``: an int ``[count, k]`` array; row ``i`` is the peer set of this class
    that peer ``i`` sees (its ``peers.<class>`` input), and what it gathers from its own
    class comes from those ``k`` peers, in that order (``-1``: no neighbour in that
    column). Without it every peer sees every running peer of its class.
    """

    count: int
    init_args: Mapping[str, tuple] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    cohort: Any = None
    dropout: float = 0.0
    hosts: tuple[str, ...] = ()
    neighbours: Any = None

    def __post_init__(self) -> None:
        if not _is_int(self.count) or self.count < 1:
            raise SimulationError(f"Peers.count must be a positive int, got {self.count!r}")
        object.__setattr__(self, "_plan", plan_cohort(self.cohort, self.count))
        object.__setattr__(self, "_neighbours", _neighbours(self.neighbours, self.count))
        if not (isinstance(self.dropout, numbers.Real) and 0.0 <= self.dropout < 1.0):
            raise SimulationError(f"Peers.dropout must be in [0, 1), got {self.dropout!r}")
        for what, tree in (("init_args", self.init_args), ("inputs", self.inputs)):
            for name, value in tree.items():
                for leaf in jax.tree.leaves(value):
                    shape = np.shape(leaf)
                    if not shape or shape[0] != self.count:
                        raise SimulationError(
                            f"Peers.{what}[{name!r}] leaves need a leading axis of {self.count} "
                            f"(one row per peer), got shape {shape}")

    @property
    def plan(self) -> CohortPlan | None:
        """The cohort read once (None: every peer runs every round)."""
        return self._plan

    @property
    def running(self) -> int:
        """How many peers (cohort slots) run each round."""
        return self.count if self._plan is None else self._plan.size

    @property
    def tables(self) -> dict[str, np.ndarray]:
        """The arrays the round reads as arguments: ``"cohort"`` (a schedule or trace) and
        ``"neighbours"``, where given."""
        tables = {}
        if self._plan is not None and self._plan.table is not None:
            tables["cohort"] = self._plan.table
        if self._neighbours is not None:
            tables["neighbours"] = self._neighbours
        return tables

    def describe(self) -> dict[str, Any]:
        """What of this entry shapes the round program, JSON-ready: count, cohort
        (:meth:`CohortPlan.describe`), dropout, hosts and the neighbours' shape."""
        return {"count": self.count,
                "cohort": None if self._plan is None else self._plan.describe(),
                "dropout": float(self.dropout), "hosts": list(self.hosts),
                "neighbours": None if self._neighbours is None
                else list(self._neighbours.shape)}


def _neighbours(value: Any, count: int) -> np.ndarray | None:
    """``Peers.neighbours`` as int32 ``[count, k]``, checked."""
    if value is None:
        return None
    array = np.asarray(value)
    if array.ndim != 2 or array.shape[0] != count or array.shape[1] == 0 \
            or not np.issubdtype(array.dtype, np.integer):
        raise SimulationError(f"Peers.neighbours must be an int array [{count}, k] with k >= 1, "
                              f"got {array.dtype}{list(array.shape)}")
    bad = np.argwhere((array < EMPTY) | (array >= count))
    if bad.size:
        i, j = bad[0]
        raise SimulationError(f"Peers.neighbours[{i}, {j}] is {array[i, j]}, not a peer id in "
                              f"[0, {count}) or -1 (no neighbour)")
    return array.astype(np.int32)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def resolve_groups(population: Mapping[str, int | Peers], classes: set[str]
                   ) -> tuple[dict[str, Peers], dict[str, str]]:
    """``(groups, group_of_class)``: each population entry as ``Peers`` and, for every peer
    class that has partitions, the entry whose peers play it.

    The initiator class ``self``, unless some entry hosts it, is played by the ``server``
    entry when there is one. Raises :class:`SimulationError` for an entry naming no class
    of the Module, a class played by no entry or by two.
    """
    if not isinstance(population, Mapping) or not population:
        raise SimulationError("population must map peer classes to a count or Peers")
    groups = {name: p if isinstance(p, Peers) else Peers(p) for name, p in population.items()}
    unknown = sorted(set(groups) - classes)
    if unknown:
        raise SimulationError(f"population names classes {unknown} the Module does not have; "
                              f"its classes: {sorted(classes)}")
    group_of: dict[str, str] = {}
    for name, peers in groups.items():
        for cls in (name, *peers.hosts):
            if cls in group_of:
                raise SimulationError(f"class {cls!r} is played by both {group_of[cls]!r} and "
                                      f"{name!r}")
            group_of[cls] = name
    if ann.SELF in classes and ann.SELF not in group_of and "server" in groups:
        group_of[ann.SELF] = "server"
    missing = sorted(classes - set(group_of))
    if missing:
        raise SimulationError(f"no peers play class(es) {missing}: add them to the population "
                              f"(or to an entry's hosts)")
    return groups, group_of
