"""``PbtHistory``: the record of a population-based run, a
:class:`~bbjax.simulation.history.History` with one row per generation plus the whole
population's fitness, hyperparameters and lineage."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bbjax.errors import InvalidArgument
from bbjax.simulation.history import History
from bbjax.strategies.config import Categorical, SearchSpace


@dataclass
class PbtHistory(History):
    """A :class:`History` whose rounds are generations: ``metrics`` holds per generation
    ``best_fitness``, ``mean_fitness`` (over the members that did not fail), ``failed``
    (how many failed), each extra metric ``evaluate`` returned and ``best_<name>`` for
    each hyperparameter (a Categorical's choice, or ``best_<name>_index`` when its choices
    are not numbers), both of the generation's best member; ``states`` are the members'
    states after the last generation (stacked, slot ``j`` at index ``j``). Per generation
    ``g`` and slot ``j``: ``fitness[g, j]`` (−∞ for a failed member),
    ``hyperparameters[name][g, j]`` the (decoded) value it trained with, and
    ``parents[g, j]`` the slot whose state and hyperparameters it started generation ``g``
    from (``parents[0, j] == j``; an explored copy then trains with new
    hyperparameters)."""

    fitness: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    hyperparameters: dict[str, np.ndarray] = field(default_factory=dict)
    parents: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))

    def best(self) -> int:
        """The slot of the best member of the last generation (ties: the lower slot)."""
        if not self.fitness.size:
            raise InvalidArgument("the record holds no generation")
        return int(np.argmax(self.fitness[-1]))

    def ancestry(self, member: int) -> np.ndarray:
        """``[G]``: the slot whose line ``member`` (a slot of the last generation)
        descends from, generation by generation (its last entry is ``member``)."""
        generations, n = self.parents.shape
        if not 0 <= member < n:
            raise InvalidArgument(f"member must be a slot in [0, {n}), got {member}")
        line = np.empty(generations, np.int64)
        slot = member
        for g in range(generations - 1, -1, -1):
            line[g] = slot
            slot = int(self.parents[g, slot])
        return line

    def to_json(self, path: str | Path) -> Path:
        """:meth:`History.to_json`'s record (one row per generation) plus ``"population"``:
        ``{"fitness", "hyperparameters", "parents"}`` as ``[generation][slot]`` lists
        (null for a failed member's fitness)."""
        path = super().to_json(path)
        record = json.loads(path.read_text())
        record["population"] = {
            "fitness": [[_finite(v) for v in row] for row in self.fitness.tolist()],
            "hyperparameters": {name: [[_finite(v) for v in row] for row in values.tolist()]
                                for name, values in self.hyperparameters.items()},
            "parents": self.parents.tolist()}
        path.write_text(json.dumps(record, indent=1, allow_nan=False))
        return path


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class GenerationRecord:
    """The host-side record of the generations a PBT run has run so far: ``add`` one
    generation's fitness, extra metrics and hyperparameter values; ``history`` makes the
    :class:`PbtHistory`."""

    def __init__(self, space: SearchSpace, n: int):
        self.space = space
        self.fitness: list[np.ndarray] = []
        self.extras: list[dict[str, np.ndarray]] = []
        self.values: list[dict[str, np.ndarray]] = []
        self.parents: list[np.ndarray] = [np.arange(n, dtype=np.int32)]

    def add(self, fitness: np.ndarray, extras: dict, values: dict) -> None:
        self.fitness.append(fitness)
        self.extras.append(extras)
        self.values.append(values)

    def history(self, members: Any, started: float, compile_seconds: float,
                config: dict | None) -> PbtHistory:
        fitness = np.stack(self.fitness)
        metrics: dict[str, list[float]] = {"best_fitness": [], "mean_fitness": [],
                                           "failed": []}
        for g, row in enumerate(fitness):
            ok = np.isfinite(row)
            top = int(np.argmax(row))
            metrics["best_fitness"].append(float(row[top]))
            metrics["mean_fitness"].append(float(row[ok].mean()) if ok.any() else np.nan)
            metrics["failed"].append(float((~ok).sum()))
            for name, values in self.extras[g].items():
                metrics.setdefault(name, []).append(float(values[top]))
            for name, values in self.values[g].items():
                metric, value = _best_value(self.space[name], name, values[top])
                metrics.setdefault(metric, []).append(value)
        seconds = time.perf_counter() - started
        generations = len(self.fitness)
        return PbtHistory(
            metrics={k: np.asarray(v, np.float64) for k, v in metrics.items()},
            states=members, seconds=seconds, config=config or {},
            diverged_at=next((g for g, row in enumerate(fitness)
                              if not np.isfinite(row).any()), None),
            compile_seconds=compile_seconds, run_seconds=seconds - compile_seconds,
            fitness=fitness,
            hyperparameters={name: np.stack([v[name] for v in self.values])
                             for name in self.space.names},
            parents=np.stack(self.parents[:generations]))


def _best_value(param: Any, name: str, value: Any) -> tuple[str, float]:
    """The metric of hyperparameter ``name``'s (decoded) ``value``: ``best_<name>``, a
    Categorical's choice when its choices are numbers, else ``best_<name>_index``."""
    if isinstance(param, Categorical):
        if not param.numeric():
            return f"best_{name}_index", float(value)
        return f"best_{name}", float(param.choices[int(value)])
    return f"best_{name}", float(value)
