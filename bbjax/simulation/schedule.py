"""The order in which a round's partitions run, from who sends what to whom."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from bbjax.compiler import Compiled
from bbjax.compiler.program import Program, Receive
from bbjax.components import Component
from bbjax.errors import SimulationError
from bbjax.compiler.step import PartitionStep


@dataclass
class Stage:
    """One partition of the round, run for the peers of one population entry."""

    step: PartitionStep
    peer_class: str
    group: str
    receives: list[Receive]   # delivered from earlier stages
    exchanges: list[Receive]  # sent and received within this stage (neighbour exchange)
    sends: dict[str, str]     # port -> destination class


def build_stages(compiled: Compiled, bindings: Mapping[str, Component],
                 group_of: Mapping[str, str], phase: str) -> list[Stage]:
    """The ``phase`` ("main" or "bootstrap") partitions of ``compiled``'s
    :class:`Program`, run by ``bindings`` (checked by :meth:`Program.bind`), as stages in
    an order where every stage runs after the stages that send to it. Raises
    :class:`SimulationError` for a class that sends itself single (non-gather) messages or
    a cycle between partitions."""
    stages = []
    for partition in Program.of(compiled).phase(phase):
        sends = {s.port: s.dest_class for s in partition.sends}
        stage = Stage(PartitionStep(compiled, partition.name, bindings), partition.peer_class,
                      group_of[partition.peer_class],
                      [r for r in partition.receives if r.port not in sends],
                      [r for r in partition.receives if r.port in sends], sends)
        for r in stage.exchanges:
            if not r.gather:
                raise SimulationError(
                    f"{partition.name} sends port {r.port!r} to its own class and receives "
                    f"it as a single message; a class exchanging with itself needs g.gather")
        stages.append(stage)
    return _topological(stages)


def _topological(stages: list[Stage]) -> list[Stage]:
    sender = {port: stage for stage in stages for port in stage.sends}
    order: list[Stage] = []
    pending = list(stages)
    while pending:
        ready = [s for s in pending
                 if all(sender[r.port] in order for r in s.receives)]
        if not ready:
            names = ", ".join(s.step.target for s in pending)
            raise SimulationError(f"the partitions {names} wait on each other's messages")
        order += ready
        pending = [s for s in pending if s not in ready]
    return order
