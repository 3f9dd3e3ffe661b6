"""``simulate``'s cache: a population's :class:`Simulation` and its compiled programs, built
once and reused by later calls with the same artifact, components, population shapes and
devices.

The key holds the artifact's verified passport (which hashes every partition), each slot's
component (by identity: a fingerprint does not cover a component's code) with its
fingerprint, every entry's count, cohort, dropout, hosts and neighbours shape, the tree
structure, shapes and dtypes of its ``init_args`` and ``inputs`` (their values are
arguments of the programs, never constants) and the devices. The programs of an entry are
compiled ahead of time, one per distinct set of argument shapes (the initial states, a
chunk of ``k`` rounds, an ``evaluate`` function), so the time spent compiling is measured
apart from the time spent running. The newest ``SIZE`` entries are kept.
"""

from __future__ import annotations

import inspect
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping

import jax
import numpy as np

from bbjax.compiler import Compiled
from bbjax.compiler.program import Program
from bbjax.components import Component
from bbjax.simulation.engine import Simulation
from bbjax.simulation.population import Peers

SIZE = 8


@dataclass
class Clock:
    """Seconds spent compiling (building, tracing, lowering, compiling) and running."""

    compile: float = 0.0
    run: float = 0.0

    def timed(self, part: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, its wall time added to ``part`` ("compile" or "run")."""
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            setattr(self, part, getattr(self, part) + time.perf_counter() - start)


@dataclass
class Built:
    """A :class:`Simulation` and the programs compiled for it, by key."""

    simulation: Simulation
    programs: dict[Hashable, Any] = field(default_factory=dict)

    def program(self, key: Hashable, build: Callable[[], Any], clock: Clock) -> Any:
        """The program stored under ``key``, built (and timed as compiling) the first time."""
        if key not in self.programs:
            self.programs[key] = clock.timed("compile", build)
        return self.programs[key]


_ENTRIES: OrderedDict[Hashable, Built] = OrderedDict()


def built(compiled: Compiled, population: Mapping[str, int | Peers],
          bindings: Mapping[str, Component] | None, devices: tuple, clock: Clock) -> Built:
    """The cached :class:`Built` for these arguments, or a new one (and cached when its key
    can be formed). Raises what :class:`Simulation` raises."""
    key = clock.timed("compile", _key, compiled, population, bindings, devices)
    if key is not None and key in _ENTRIES:
        _ENTRIES.move_to_end(key)
        return _ENTRIES[key]
    entry = Built(clock.timed("compile", Simulation, compiled, population, bindings))
    if key is not None:
        _ENTRIES[key] = entry
        while len(_ENTRIES) > SIZE:
            _ENTRIES.popitem(last=False)
    return entry


def identity(fn: Callable) -> tuple:
    """What a cache key holds for a user function: the function itself, or for a bound
    method its object and function (a new bound method is made at every attribute access;
    the object need not be hashable, so it is held by identity)."""
    if inspect.ismethod(fn):
        return (_Identity(fn.__self__), fn.__func__)
    return (_Identity(fn),)


@dataclass(frozen=True, eq=False)
class _Identity:
    """An object compared and hashed by identity (and kept alive by the key holding it)."""

    value: Any

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)


def clear_cache() -> None:
    """Forget every cached simulation and its compiled programs."""
    _ENTRIES.clear()


def _key(compiled: Compiled, population: Any, bindings: Any, devices: tuple) -> Hashable | None:
    """What the built simulation depends on, hashable; None when the arguments are not the
    kind a cache can key (the build then raises the error)."""
    components = compiled.bindings if bindings is None else bindings
    if not isinstance(population, Mapping) or not isinstance(components, Mapping):
        return None
    if not all(isinstance(c, Component) for c in components.values()):
        return None
    passport = tuple(sorted(Program.of(compiled).passport.items()))
    entries = []
    for name, peers in sorted(population.items()):
        peers = peers if isinstance(peers, Peers) else Peers(peers)
        plan = peers.plan
        entries.append((name, json.dumps(peers.describe(), sort_keys=True),
                        None if plan is None or plan.function is None
                        else identity(plan.function),
                        _avals(peers.init_args), _avals(peers.inputs)))
    slots = tuple((slot, c, c.fingerprint) for slot, c in sorted(components.items()))
    return passport, slots, tuple(entries), devices


def _avals(tree: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((np.shape(leaf), str(np.result_type(leaf))) for leaf in leaves)
