"""``Graph``: what a Module body records into — inputs, outputs, slot calls, sends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.components import Component, Role
from bbjax.errors import ModuleError, UnboundSlotError
from bbjax.dsl.primitives import TOKEN, gather_p, send_p, slot_call_p

if TYPE_CHECKING:
    from bbjax.dsl.module import Module

PEER_DTYPE = np.int32


@dataclass(frozen=True)
class PeerSet:
    """Peer ids (``int32[n]``) of one peer class: where a send goes."""

    ids: Any
    peer_class: str


def peer_input_name(peer_class: str) -> str:
    """The graph input that carries the peer set of ``peer_class``."""
    return f"peers.{peer_class}"


def state_name(slot: str) -> str:
    """The graph input carrying ``slot``'s state token before the body runs."""
    return f"state.{slot}"


def next_state_name(slot: str) -> str:
    """The graph output carrying ``slot``'s state token after the body ran."""
    return f"next_state.{slot}"


_RESERVED = ("peers.", "state.", "next_state.")


class SlotRef:
    """``g.slot(name)``: attribute access gives the slot's methods as recording calls."""

    def __init__(self, graph: "Graph", name: str, peer_class: str | None):
        self._graph = graph
        self._name = name
        self._peer_class = peer_class

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*inputs: Any, after: Any = None) -> Any:
            return self._graph._slot_call(self._name, method, inputs, after, self._peer_class)

        call.__name__ = f"{self._name}.{method}"
        return call


class Graph:
    """Records one trace of a Module body.

    ``inputs`` holds the traced values of the declared inputs (by name); when ``None`` the
    graph is discovering which inputs the body declares and hands out placeholders.
    """

    def __init__(self, bindings: Mapping[str, Component], states: Mapping[str, Any],
                 inputs: Mapping[str, Any] | None):
        self._bindings = bindings
        self._states = states
        self._inputs = inputs
        self.declared: dict[str, jax.ShapeDtypeStruct] = {}
        self.peer_classes: dict[str, str] = {}  # input name -> peer class
        self.outputs: dict[str, Any] = {}
        self.tokens: dict[str, Any] = {}  # slot -> current state token

    # -- inputs and outputs -----------------------------------------------------------------

    def input(self, name: str, spec: Any) -> jax.Array:
        """Declare the graph input ``name`` (home class ``self``) with ``spec``'s shape/dtype.

        ``spec`` is an array or ``jax.ShapeDtypeStruct``; a string in its shape names a
        symbolic dimension.
        """
        if name in self.declared:
            raise ModuleError(f"graph input {name!r} is declared twice")
        if name.startswith(_RESERVED) or name in self.outputs:
            raise ModuleError(f"graph input name {name!r} is reserved or already an output")
        self.declared[name] = jax.ShapeDtypeStruct(tuple(spec.shape), spec.dtype)
        return self._value(name)

    def peers(self, peer_class: str, size: int | None = None) -> PeerSet:
        """The peer set of ``peer_class`` (a graph input); sends to it go to that class.

        Its length is the symbolic dimension ``n_<class>``, or ``size`` when given (a fixed
        cohort: gathers from the class then have a static leading dimension).
        """
        if not peer_class or not peer_class.replace("_", "").isalnum():
            raise ModuleError(f"peer class must be a non-empty identifier, got {peer_class!r}")
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ModuleError(f"peer set {peer_class!r}: size must be a positive int, got {size!r}")
        name = peer_input_name(peer_class)
        dim = f"n_{peer_class}" if size is None else size
        if name not in self.declared:
            self.declared[name] = jax.ShapeDtypeStruct((dim,), PEER_DTYPE)
            self.peer_classes[name] = peer_class
        elif self.declared[name].shape != (dim,):
            raise ModuleError(f"peer set {peer_class!r} is declared with two sizes")
        return PeerSet(self._value(name), peer_class)

    def output(self, name: str, value: Any) -> None:
        """Record ``value`` (a pytree of arrays) as the graph output ``name``."""
        if name in self.outputs or name.startswith(_RESERVED):
            raise ModuleError(f"graph output {name!r} is recorded twice or uses a reserved name")
        self.outputs[name] = value

    def _value(self, name: str) -> Any:
        spec = self.declared[name]
        if self._inputs is None:  # discovering: any value of the right type will do
            shape = tuple(1 if isinstance(d, str) else d for d in spec.shape)
            return jnp.zeros(shape, spec.dtype)
        return self._inputs[name]

    # -- slots ------------------------------------------------------------------------------

    def slot(self, name: str, *, peer_class: str | None = None) -> SlotRef:
        """The slot ``name``; ``peer_class`` names the class a PeerSelector's peers belong to."""
        return SlotRef(self, name, peer_class)

    def _slot_call(self, slot: str, method: str, inputs: tuple, after: Any,
                   peer_class: str | None) -> Any:
        component = self._bindings.get(slot)
        if component is None:
            raise UnboundSlotError(f"slot {slot!r} is not bound to a component "
                                   f"(bound: {sorted(self._bindings)})")
        if component.role is Role.PEER_SELECTOR and not peer_class:
            raise ModuleError(f"PeerSelector slot {slot!r} needs peer_class=... to say which "
                              "class its peers belong to")
        specs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)),
                             inputs)
        _, outputs = component.abstract_call(method, self._states[slot], *specs)
        out_leaves, out_tree = jax.tree.flatten(outputs)
        out_avals = tuple(jax.core.ShapedArray(o.shape, o.dtype) for o in out_leaves)
        in_leaves, in_tree = jax.tree.flatten(inputs)
        triggers = jax.tree.leaves(after) if after is not None else []
        *results, self.tokens[slot] = slot_call_p.bind(
            *in_leaves, *triggers, self._token(slot), slot=slot, method=method,
            role=component.role.value, peer_class=peer_class, n_triggers=len(triggers),
            in_tree=in_tree, out_avals=out_avals)
        outputs = jax.tree.unflatten(out_tree, results)
        if component.role is Role.PEER_SELECTOR:
            return PeerSet(outputs, peer_class)
        return outputs

    def _token(self, slot: str) -> Any:
        if slot not in self.tokens:
            name = state_name(slot)
            self.declared[name] = jax.ShapeDtypeStruct(TOKEN.shape, TOKEN.dtype)
            self.tokens[slot] = self._value(name)
        return self.tokens[slot]

    def final_outputs(self) -> dict[str, Any]:
        """The recorded outputs plus each slot's final state token."""
        return {**self.outputs, **{next_state_name(s): t for s, t in self.tokens.items()}}

    # -- wire -------------------------------------------------------------------------------

    def send(self, port: str, value: Any, *, to: PeerSet) -> Any:
        """Send ``value`` (a pytree of arrays) to the peers ``to``; returns it as received there.

        The returned value lives on ``to``'s peer class: ops on it run on those peers.
        """
        leaves, tree = _wire_payload("send", port, value, to=to)
        received = send_p.bind(*leaves, to.ids, port=port, dest_class=to.peer_class)
        return jax.tree.unflatten(tree, received)

    def gather(self, port: str, value: Any, *, to: PeerSet, senders: PeerSet) -> tuple[Any, Any]:
        """Every peer of ``senders`` sends ``value`` to ``to``; returns, on ``to``'s class, the
        values stacked over ``senders`` (in their peer-set order) and a bool arrival mask.

        The receiving ops run once per round, when every sender's value arrived or the node
        closes the round early (absent senders are masked out). A repeated value from one
        sender replaces the earlier one.
        """
        leaves, tree = _wire_payload("gather", port, value, to=to, senders=senders)
        *stacked, arrived = gather_p.bind(*leaves, to.ids, senders.ids, port=port,
                                          dest_class=to.peer_class,
                                          source_class=senders.peer_class)
        return jax.tree.unflatten(tree, stacked), arrived

    # -- sub-modules ------------------------------------------------------------------------

    def call(self, module: "Module", **inputs: Any) -> dict[str, Any]:
        """Record ``module``'s body inline with its declared inputs taken from ``inputs``."""
        child = _ChildGraph(self, module.name, inputs)
        with jax.named_scope(module.name):
            module.body(child)
        missing = set(inputs) - set(child.used)
        if missing:
            raise ModuleError(f"sub-module {module.name!r} declares no inputs {sorted(missing)}")
        return dict(child.outputs)


def _wire_payload(kind: str, port: str, value: Any, **peer_sets: Any) -> tuple[list, Any]:
    """``value``'s leaves and structure, after checking the peer-set arguments."""
    for name, peers in peer_sets.items():
        if not isinstance(peers, PeerSet):
            raise ModuleError(f"{kind} {port!r}: {name!r} must be a peer set (g.peers(...) or "
                              f"a PeerSelector's output), got {type(peers).__name__}")
    leaves, tree = jax.tree.flatten(value)
    if not leaves:
        raise ModuleError(f"{kind} {port!r} carries no arrays")
    return leaves, tree


class _ChildGraph(Graph):
    """A sub-module's view: its inputs come from the caller, the rest goes to the parent."""

    def __init__(self, parent: Graph, name: str, inputs: Mapping[str, Any]):
        super().__init__(parent._bindings, parent._states, None)
        self.tokens = parent.tokens  # slots are shared with the parent
        self._parent = parent
        self._name = name
        self._given = inputs
        self.used: list[str] = []

    def input(self, name: str, spec: Any) -> jax.Array:
        if name not in self._given:
            raise ModuleError(f"sub-module {self._name!r} needs input {name!r}")
        self.used.append(name)
        return self._given[name]

    def peers(self, peer_class: str, size: int | None = None) -> PeerSet:
        return self._parent.peers(peer_class, size)

    def _token(self, slot: str) -> Any:
        return self._parent._token(slot)
