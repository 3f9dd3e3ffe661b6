"""A compiled partition as a pure step: ``(states, inputs, inbox) -> (states, outputs, outbox)``.

``states`` maps each slot the partition calls to its component state; ``inputs`` its graph
inputs by name (peer sets ``peers.<class>`` and declared inputs); ``inbox`` each receive
port to the payload delivered there (a list of arrays); ``outbox`` each send port to
``(payload, peers)``. The step is jittable and vmappable (many peers of one class).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from bbjax.compiler import Compiled
from bbjax.compiler import annotations as ann
from bbjax.components import Component
from bbjax.errors import StepError
from bbjax.onnx import lower


@dataclass
class StepRuntime:
    """What a running partition's slot calls and wire ops act on, during one trace."""

    components: Mapping[str, Component]
    states: dict[str, Any]
    inbox: Mapping[str, list]
    outbox: dict[str, tuple[list, Any]] = field(default_factory=dict)

    def call_slot(self, slot: str, method: str, args: Any) -> list:
        if slot not in self.states:
            raise StepError(f"no state for slot {slot!r}")
        self.states[slot], outputs = self.components[slot].call(method, self.states[slot], *args)
        return jax.tree.leaves(outputs)

    def send(self, port: str, leaves: list, peers: Any) -> None:
        self.outbox[port] = (leaves, peers)

    def receive(self, port: str) -> list:
        if port not in self.inbox:
            raise StepError(f"nothing was delivered on port {port!r}")
        return list(self.inbox[port])


class PartitionStep:
    """The lowered partition ``target`` of ``compiled`` with ``bindings`` for its slots."""

    def __init__(self, compiled: Compiled, target: str, bindings: Mapping[str, Component]):
        function = compiled.find(target)
        self.target = function.name
        self.slots = sorted({ann.get(n, ann.SLOT) for n in function.node if ann.is_slot_call(n)})
        missing = [s for s in self.slots if s not in bindings]
        if missing:
            raise StepError(f"partition {self.target!r} calls unbound slots {missing}")
        self.components = {s: bindings[s] for s in self.slots}
        self.receives = [ann.get(n, ann.PORT) for n in function.node if ann.is_recv(n)]
        self.sends = [ann.get(n, ann.PORT) for n in function.node if ann.is_send(n)]
        self.deadlines = {ann.get(n, ann.PORT): _deadline_ns(self.target, n)
                          for n in function.node if ann.is_send(n)}
        self.input_names = [i for i in function.input if not i.startswith("state.")]
        self.output_names = [o for o in function.output
                             if not o.startswith(("next_state.", "sent."))]
        self._inputs = list(function.input)
        self._outputs = list(function.output)
        self._lowered = lower(compiled.partition_model(target))

    def init(self, key: jax.Array) -> dict[str, Any]:
        """Fresh states for the partition's slots."""
        keys = jax.random.split(key, max(len(self.slots), 1))
        return {s: self.components[s].init(k) for s, k in zip(self.slots, keys)}

    def __call__(self, states: Mapping[str, Any], inputs: Mapping[str, Any],
                 inbox: Mapping[str, list]) -> tuple[dict, dict, dict]:
        runtime = StepRuntime(self.components, dict(states), inbox)
        outputs = self.run(runtime, inputs)
        return runtime.states, outputs, runtime.outbox

    def run(self, runtime: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the partition with ``runtime`` serving its slot calls and wire ops (a
        :class:`StepRuntime` or one with the same methods); returns the graph outputs."""
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise StepError(f"partition {self.target!r} needs inputs {missing}")
        args = [np.zeros((), np.uint8) if n.startswith("state.") else inputs[n]
                for n in self._inputs]
        interpreter = self._lowered.interpreter
        interpreter.runtime = runtime
        try:
            results = self._lowered(*args)
        finally:
            interpreter.runtime = None
        return {n: v for n, v in zip(self._outputs, results) if n in self.output_names}


def _deadline_ns(target: str, node: Any) -> int:
    """A send's ``deadline_ns`` annotation (0: none): decimal digits, below 2**63."""
    text = ann.get(node, ann.PREFIX + "deadline_ns", "0")
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) < 2**63):
        raise StepError(f"partition {target!r}: send {ann.get(node, ann.PORT)!r} has "
                        f"deadline_ns {text!r}, not an integer in [0, 2**63)")
    return int(text)
