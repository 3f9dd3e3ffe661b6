"""``Program``: a compiled artifact read once, as typed values both runners share.

``Program.of(compiled)`` verifies the passport and reads every partition's annotations
(peer class, phase, graph inputs and outputs, slots, sends with their deadlines, receives
with their sender class and value types) into frozen dataclasses, once per artifact. Both
``simulate`` and ``install`` run from it, and :meth:`Program.bind` is their one check of
the components they are given against the passport.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx

from bbjax.compiler import annotations as ann
from bbjax.compiler.passport import called_slots, check_component, recorded_bindings, verify_passport
from bbjax.components import Component, Role
from bbjax.errors import BbjaxError, CompileError, ProgramError
from bbjax.onnx.dtypes import numpy_dtype

if TYPE_CHECKING:
    from bbjax.compiler.compiled import Compiled

PHASES = ("main", "bootstrap")
DEADLINE_NS = ann.PREFIX + "deadline_ns"


@dataclass(frozen=True)
class TensorType:
    """An array's dtype and shape; a ``str`` dimension is symbolic."""

    dtype: np.dtype
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class Send:
    """A port a partition sends (or gathers) on, the class it goes to and its deadline in
    nanoseconds after the send (0: none)."""

    port: str
    dest_class: str
    deadline_ns: int


@dataclass(frozen=True)
class Receive:
    """A port a partition receives on, from which class; a ``gather`` stacks one message
    per sender. ``values``: the arrays one message carries (for a gather, one sender's)."""

    port: str
    source_class: str
    gather: bool
    values: tuple[TensorType, ...]


@dataclass(frozen=True)
class Partition:
    """One partition: what runs on the peers of ``peer_class`` in ``phase``.

    ``inputs`` and ``outputs`` are the graph inputs a caller gives (peer sets, declared
    inputs) and the outputs it sees; ``graph_inputs`` and ``graph_outputs`` the whole
    signature, with the slots' state tokens and the sends' sentinels.
    """

    name: str
    peer_class: str
    phase: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    slots: tuple[str, ...]
    sends: tuple[Send, ...]
    receives: tuple[Receive, ...]
    graph_inputs: tuple[str, ...]
    graph_outputs: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Program:
    """A verified artifact's partitions, its passport and the slot bindings it records
    (slot -> ``<role>|<component name>``); ``components`` are the ones it was compiled
    with (None for an artifact loaded from disk)."""

    partitions: tuple[Partition, ...]
    passport: Mapping[str, str]
    bindings: Mapping[str, str]
    components: Mapping[str, Component] | None = field(default=None, repr=False)

    @staticmethod
    def of(compiled: Compiled) -> Program:
        """``compiled`` read once (cached on the artifact); raises what :meth:`read` raises."""
        return compiled.program

    @staticmethod
    def read(model: onnx.ModelProto,
             components: Mapping[str, Component] | None = None) -> Program:
        """Verify ``model``'s passport and read its partitions.

        Raises :class:`NotCompiledError` or :class:`PassportError` for the passport, and
        :class:`ProgramError` for a partition without a peer class or a known phase, a send
        or receive without its port or peer class, a deadline that is not an integer in
        ``[0, 2**63)``, a receive without tensor types, a port two partitions of one phase
        send, or a port received that no partition of its phase sends.
        """
        passport = verify_passport(model)
        partitions = tuple(_partition(f) for f in model.functions)
        _check_ports(partitions)
        return Program(partitions, passport, recorded_bindings(passport, model.functions),
                       None if components is None else dict(components))

    @property
    def peer_classes(self) -> tuple[str, ...]:
        """Every class some partition runs on, sorted."""
        return tuple(sorted({p.peer_class for p in self.partitions}))

    def partition(self, target: str) -> Partition:
        """The partition named ``target`` exactly or by its name before ``#``
        (:class:`CompileError` listing the partitions otherwise)."""
        for partition in self.partitions:
            if target in (partition.name, partition.name.split("#", 1)[0]):
                return partition
        raise CompileError(f"no partition {target!r}; available: "
                           f"{[p.name for p in self.partitions]}")

    def phase(self, phase: str) -> tuple[Partition, ...]:
        """The partitions of ``phase`` (``"main"`` or ``"bootstrap"``)."""
        return tuple(p for p in self.partitions if p.phase == phase)

    def bootstrap_of(self, partitions: Sequence[Partition]) -> tuple[Partition, ...]:
        """The bootstrap partitions of ``partitions``' classes not among them."""
        classes = {p.peer_class for p in partitions}
        return tuple(p for p in self.phase("bootstrap")
                     if p.peer_class in classes and p not in partitions)

    def bind(self, bindings: Mapping[str, Component] | None, partitions: Sequence[Partition],
             *, user: str, error: type[BbjaxError]) -> dict[str, Component]:
        """The components that run ``partitions``: from ``bindings`` (default: the ones the
        artifact was compiled with), one per slot they call, each with the fingerprint the
        passport records, plus every Backend among ``bindings`` (its op overrides apply to
        every partition).

        ``user`` names the caller in messages (``"install"``). Raises ``error`` when no
        bindings are given for an artifact that carries none, a called slot has no
        component or a binding is not a Component, and :class:`PassportError` for a
        component that is not the one compiled.
        """
        slots = sorted({s for p in partitions for s in p.slots})
        if bindings is None:
            if self.components is None:
                raise error(f"{user}: this artifact carries no components (it was loaded, "
                            f"not compiled in this process); pass bindings= for its slots "
                            f"{slots}")
            bindings = self.components
        missing = [s for s in slots if s not in bindings]
        if missing:
            needs = "; ".join(f"{s!r} needs a component ({self.bindings[s]})" for s in missing)
            raise error(f"unbound slots {missing}: give it a component in bindings ({needs})")
        for name, component in bindings.items():
            if not isinstance(component, Component):
                raise error(f"binding {name!r}: expected a bbjax Component, got "
                            f"{type(component).__name__}")
        for slot in slots:
            check_component(self.passport, slot, bindings[slot], user)
        backends = {name: c for name, c in bindings.items() if c.role is Role.BACKEND}
        return {**{s: bindings[s] for s in slots}, **backends}


def _partition(function: onnx.FunctionProto) -> Partition:
    peer_class = ann.function_meta(function, ann.PEER_CLASS)
    phase = ann.function_meta(function, ann.PHASE)
    if not peer_class:
        raise ProgramError(f"partition {function.name!r} names no peer class "
                           f"({ann.PEER_CLASS!r})")
    if phase not in PHASES:
        raise ProgramError(f"partition {function.name!r} has phase {phase!r}, not one of "
                           f"{list(PHASES)}")
    types = {v.name: v for v in function.value_info}
    return Partition(
        name=function.name, peer_class=peer_class, phase=phase,
        inputs=tuple(i for i in function.input if not i.startswith("state.")),
        outputs=tuple(o for o in function.output
                      if not o.startswith(("next_state.", "sent."))),
        slots=tuple(called_slots(function)),
        sends=tuple(_send(function.name, n) for n in function.node if ann.is_send(n)),
        receives=tuple(_receive(function.name, n, types)
                       for n in function.node if ann.is_recv(n)),
        graph_inputs=tuple(function.input), graph_outputs=tuple(function.output))


def _annotation(target: str, node: onnx.NodeProto, key: str) -> str:
    value = ann.get(node, key)
    if not value:
        raise ProgramError(f"partition {target!r}: {ann.label(node)} has no {key!r}")
    return value


def _send(target: str, node: onnx.NodeProto) -> Send:
    port = _annotation(target, node, ann.PORT)
    text = ann.get(node, DEADLINE_NS, "0")
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) < 2**63):
        raise ProgramError(f"partition {target!r}: send {port!r} has deadline_ns {text!r}, "
                           "not an integer in [0, 2**63)")
    return Send(port, _annotation(target, node, ann.DEST_CLASS), int(text))


def _receive(target: str, node: onnx.NodeProto,
             types: Mapping[str, onnx.ValueInfoProto]) -> Receive:
    port = _annotation(target, node, ann.PORT)
    gather = ann.get(node, ann.GATHER) == "1"
    payload = list(node.output[:-1] if gather else node.output)
    values = []
    for name in payload:
        tensor = types[name].type.tensor_type if name in types else None
        if tensor is None or not tensor.elem_type or not tensor.HasField("shape"):
            raise ProgramError(f"partition {target!r}: receive {port!r} has no tensor type "
                               f"for {name!r}")
        shape = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                      for d in tensor.shape.dim)
        values.append(TensorType(numpy_dtype(tensor.elem_type), shape[1:] if gather else shape))
    return Receive(port, _annotation(target, node, ann.SOURCE_CLASS), gather, tuple(values))


def _check_ports(partitions: Sequence[Partition]) -> None:
    for phase in PHASES:
        sender: dict[str, str] = {}
        for partition in (p for p in partitions if p.phase == phase):
            for send in partition.sends:
                if send.port in sender:
                    raise ProgramError(f"port {send.port!r} is sent by two partitions: "
                                       f"{sender[send.port]} and {partition.name}")
                sender[send.port] = partition.name
        for partition in (p for p in partitions if p.phase == phase):
            for receive in partition.receives:
                if receive.port not in sender:
                    raise ProgramError(f"{partition.name} receives on port "
                                       f"{receive.port!r}, which no {phase} partition sends")
