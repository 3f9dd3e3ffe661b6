"""What a vmapped partition step's slot calls and wire ops do in a simulation.

Messages between stages are routed by the engine (:mod:`bbjax.simulation.engine`). A port a
stage both sends and gathers (a class exchanging with itself: gossip, neighbour averaging)
is delivered here, inside the vmapped step: from each peer's ``Peers(neighbours=...)``
(O(n·k) for n peers of k neighbours) or, without them, from every running peer of the
class (the complete graph, O(n²) by nature).

The states it is given are the peer's own; which leaves the step rewrote is seen at trace
time (a leaf returned as it was given is not rewritten).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from bbjax.components import Component
from bbjax.errors import StepError

PEER_AXIS = "peers"


class SimulatedRuntime:
    """The slot and wire handlers of one of many vmapped peers, for one stage.

    ``states[slot]`` is the peer's state, ``peer_id`` its id in its entry (``-1``: an empty
    cohort slot), ``delivers`` whether its messages this round reach anyone,
    ``neighbours`` its neighbour ids (None: every running peer) and ``rows_of`` each entry
    id's running row (``-1``: not running), unmapped.
    """

    def __init__(self, components: Mapping[str, Component], states: Mapping[str, Any],
                 inbox: Mapping[str, list], *, peer_id: Any, delivers: Any,
                 neighbours: Any = None, rows_of: Any = None):
        self.components = components
        self.inbox = inbox
        self.outbox: dict[str, tuple[list, Any]] = {}
        self.peer_id, self.delivers = peer_id, delivers
        self._neighbours, self._rows_of = neighbours, rows_of
        self._trees, self._given, self._current = {}, {}, {}
        for slot, tree in states.items():
            leaves, self._trees[slot] = jax.tree.flatten(tree)
            self._given[slot], self._current[slot] = leaves, list(leaves)

    def call_slot(self, slot: str, method: str, args: Any) -> list:
        if slot not in self._trees:
            raise StepError(f"no state for slot {slot!r}")
        current = self._current[slot]
        state, outputs = self.components[slot].call(
            method, jax.tree.unflatten(self._trees[slot], current), *args)
        self._current[slot] = jax.tree.leaves(state)
        return jax.tree.leaves(outputs)

    def send(self, port: str, leaves: list, peers: Any) -> None:
        self.outbox[port] = (leaves, peers)

    def receive(self, port: str) -> list:
        if port in self.inbox:
            return list(self.inbox[port])
        if port in self.outbox:
            return self._exchange(port)
        raise StepError(f"nothing was delivered on port {port!r}")

    def slot_state(self, slot: str) -> Any:
        """The peer's current state of ``slot``, for a step's inlined slots
        (:class:`bbjax.compiler.step.SlotStates`)."""
        if slot not in self._trees:
            raise StepError(f"no state for slot {slot!r}")
        return jax.tree.unflatten(self._trees[slot], self._current[slot])

    def set_slot_state(self, slot: str, state: Any) -> None:
        """Make ``state`` the peer's state of ``slot``."""
        self._current[slot] = jax.tree.leaves(state)

    def rewritten(self) -> dict[str, list]:
        """Per slot, each state leaf the step rewrote, or None where it kept the old one."""
        return {slot: [None if c is g else c for c, g in zip(current, self._given[slot])]
                for slot, current in self._current.items()}

    def _exchange(self, port: str) -> list:
        """What this peer gathers on ``port`` from its own class: the payloads of its
        neighbours (or of every running peer) stacked, and which of them sent to it."""
        leaves, peers = self.outbox[port]
        stacked = [jax.lax.all_gather(leaf, PEER_AXIS) for leaf in leaves]  # [n, ...], shared
        addressed = jax.lax.all_gather(jnp.atleast_1d(jnp.asarray(peers)), PEER_AXIS)
        sent = jax.lax.all_gather(self.delivers, PEER_AXIS)
        me = self.peer_id >= 0
        if self._neighbours is None:
            return [*stacked, sent & me & jnp.any(addressed == self.peer_id, axis=-1)]
        ids = self._neighbours
        rows = jnp.where(ids >= 0, self._rows_of[jnp.clip(ids, 0)], -1)
        take = jnp.clip(rows, 0)
        heard = (rows >= 0) & sent[take] & me & jnp.any(addressed[take] == self.peer_id, axis=-1)
        return [*(leaf[take] for leaf in stacked), heard]

