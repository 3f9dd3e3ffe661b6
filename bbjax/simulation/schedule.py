"""The order in which a round's partitions run, from who sends what to whom."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from bbjax.compiler import Compiled
from bbjax.compiler import annotations as ann
from bbjax.components import Component
from bbjax.runtime.step import PartitionStep
from bbjax.errors import StepError
from bbjax.errors import SimulationError


@dataclass(frozen=True)
class Receive:
    """A port a stage receives on: from which class, and whether it stacks many senders."""

    port: str
    source_class: str
    gather: bool


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
    """The ``phase`` ("main" or "bootstrap") partitions as stages, in an order where every
    stage runs after the stages that send to it. Raises :class:`SimulationError` for an
    unbound slot, a port
    nobody sends, a port sent by two partitions, or a cycle between partitions."""
    stages = []
    for function in compiled.model.functions:
        if ann.function_meta(function, ann.PHASE) != phase:
            continue
        cls = ann.function_meta(function, ann.PEER_CLASS)
        sends = {ann.get(n, ann.PORT): ann.get(n, ann.DEST_CLASS)
                 for n in function.node if ann.is_send(n)}
        receives = [Receive(ann.get(n, ann.PORT), ann.get(n, ann.SOURCE_CLASS),
                            ann.get(n, ann.GATHER) == "1")
                    for n in function.node if ann.is_recv(n)]
        try:
            step = PartitionStep(compiled, function.name, bindings)
        except StepError as exc:
            raise SimulationError(f"{exc}: give it a component in bindings") from exc
        stages.append(Stage(step, cls, group_of[cls],
                            [r for r in receives if r.port not in sends],
                            [r for r in receives if r.port in sends], sends))
    sender: dict[str, Stage] = {}
    for stage in stages:
        for port in stage.sends:
            if port in sender:
                raise SimulationError(f"port {port!r} is sent by two partitions: "
                                      f"{sender[port].step.target} and {stage.step.target}")
            sender[port] = stage
    for stage in stages:
        for r in stage.receives:
            if r.port not in sender:
                raise SimulationError(f"{stage.step.target} receives on port {r.port!r}, "
                                      f"which no {phase} partition sends")
        for r in stage.exchanges:
            if not r.gather:
                raise SimulationError(
                    f"{stage.step.target} sends port {r.port!r} to its own class and receives "
                    f"it as a single message; a class exchanging with itself needs g.gather")
    return _topological(stages, sender)


def _topological(stages: list[Stage], sender: Mapping[str, Stage]) -> list[Stage]:
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
