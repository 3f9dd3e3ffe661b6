"""A compiled partition as a pure step: ``(states, inputs, inbox) -> (states, outputs, outbox)``.

``states`` maps each slot the partition calls to its component state; ``inputs`` its graph
inputs by name (peer sets ``peers.<class>`` and declared inputs); ``inbox`` each receive
port to the payload delivered there (a list of arrays); ``outbox`` each send port to
``(payload, peers)``. The step is jittable and vmappable (many peers of one class).

The lowered partition's slot calls and wire ops act on handlers given to each call
(:class:`StepRuntime`, or any :class:`bbjax.onnx.ops.runtime.Handlers`), never on state
shared between calls. The state of a slot the compiler inlined (:mod:`bbjax.compiler.inline`)
goes into the partition as its ``state.<slot>.*`` inputs and comes out of its
``next_state.<slot>.*`` outputs; no component method runs for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

from bbjax.compiler import Compiled
from bbjax.compiler.inline import inlined_states
from bbjax.compiler.program import Partition, Program
from bbjax.components import Component
from bbjax.components.backend import op_overrides
from bbjax.errors import StepError
from bbjax.onnx import lower
from bbjax.onnx.ops.runtime import Handlers


@runtime_checkable
class SlotStates(Protocol):
    """What a step's handlers give the partition's inlined slots: their states."""

    def slot_state(self, slot: str) -> Any:
        """The current state of ``slot``."""

    def set_slot_state(self, slot: str, state: Any) -> None:
        """Make ``state`` the state of ``slot``."""


@dataclass
class StepRuntime:
    """The handlers of one step call: slot calls update ``states``, sends fill ``outbox``,
    receives read ``inbox``."""

    components: Mapping[str, Component]
    states: dict[str, Any]
    inbox: Mapping[str, list]
    outbox: dict[str, tuple[list, Any]] = field(default_factory=dict)

    def call_slot(self, slot: str, method: str, args: Any) -> list:
        if slot not in self.states:
            raise StepError(f"no state for slot {slot!r}")
        self.states[slot], outputs = self.components[slot].call(method, self.states[slot], *args)
        return jax.tree.leaves(outputs)

    def slot_state(self, slot: str) -> Any:
        if slot not in self.states:
            raise StepError(f"no state for slot {slot!r}")
        return self.states[slot]

    def set_slot_state(self, slot: str, state: Any) -> None:
        self.states[slot] = state

    def send(self, port: str, leaves: list, peers: Any) -> None:
        self.outbox[port] = (leaves, peers)

    def receive(self, port: str) -> list:
        if port not in self.inbox:
            raise StepError(f"nothing was delivered on port {port!r}")
        return list(self.inbox[port])


class PartitionStep:
    """The lowered partition ``target`` of ``compiled``, run by the components
    ``bindings`` (default: the artifact's own) give its slots; the Backends among them
    override the lowering's ops.

    Raises :class:`StepError` for a slot without a component (or an artifact without
    components and no ``bindings``), :class:`PassportError` for a component that is not the
    one compiled, and what :meth:`Program.read` raises for the artifact.
    """

    def __init__(self, compiled: Compiled, target: str,
                 bindings: Mapping[str, Component] | None = None):
        program = Program.of(compiled)
        self.partition: Partition = program.partition(target)
        self.target = self.partition.name
        components = program.bind(bindings, [self.partition], user="PartitionStep",
                                  error=StepError)
        self.slots = list(self.partition.slots)
        self.components = {s: components[s] for s in self.slots}
        self.receives = [r.port for r in self.partition.receives]
        self.sends = [s.port for s in self.partition.sends]
        self.deadlines = {s.port: s.deadline_ns for s in self.partition.sends}
        self.input_names = list(self.partition.inputs)
        self.output_names = list(self.partition.outputs)
        self._inlined = inlined_states(compiled.find(self.target), self.components, StepError)
        self._lowered = lower(compiled.partition_model(self.target),
                              ops=op_overrides(components))

    def init(self, key: jax.Array) -> dict[str, Any]:
        """Fresh states for the partition's slots."""
        keys = jax.random.split(key, max(len(self.slots), 1))
        return {s: self.components[s].init(k) for s, k in zip(self.slots, keys)}

    def __call__(self, states: Mapping[str, Any], inputs: Mapping[str, Any],
                 inbox: Mapping[str, list]) -> tuple[dict, dict, dict]:
        runtime = StepRuntime(self.components, dict(states), inbox)
        outputs = self.run(runtime, inputs)
        return runtime.states, outputs, runtime.outbox

    def run(self, handlers: Handlers, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the partition with ``handlers`` serving its slot calls and wire ops (a
        :class:`StepRuntime` or one with the same methods); returns the graph outputs.

        The states of inlined slots (:mod:`bbjax.compiler.inline`) are partition inputs and
        outputs: read with ``handlers.slot_state(slot)`` and written back with
        ``handlers.set_slot_state(slot, state)`` (:class:`SlotStates`); no component method
        runs for them."""
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise StepError(f"partition {self.target!r} needs inputs {missing}")
        if self._inlined and not isinstance(handlers, SlotStates):
            raise StepError(f"partition {self.target!r} runs slots {sorted(self._inlined)} "
                            f"inline: its handlers ({type(handlers).__name__}) need "
                            "slot_state and set_slot_state (bbjax.compiler.step.SlotStates)")
        states = {slot: handlers.slot_state(slot) for slot in self._inlined}
        leaves = {name: leaf for slot, layout in self._inlined.items()
                  for name, leaf in zip(layout.inputs, layout.leaves(states[slot]))}
        args = [leaves[n] if n in leaves else np.zeros((), np.uint8) if n.startswith("state.")
                else inputs[n] for n in self.partition.graph_inputs]
        results = dict(zip(self.partition.graph_outputs,
                           self._lowered(*args, handlers=handlers)))
        for slot, layout in self._inlined.items():
            handlers.set_slot_state(slot, layout.state([results[n] for n in layout.outputs],
                                                       states[slot]))
        return {n: v for n, v in results.items() if n in self.output_names}
