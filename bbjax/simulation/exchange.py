"""What a vmapped partition step's wire ops do in a simulation.

Messages between stages are routed by the engine before and after each stage; a port a
stage both sends and gathers (a class exchanging with itself, e.g. gossip) is delivered
inside the vmapped step with collectives over the peer axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from bbjax.runtime.step import StepRuntime

from bbjax.errors import StepError

PEER_AXIS = "peers"


@dataclass
class SimulatedRuntime(StepRuntime):
    """A :class:`StepRuntime` for one of many vmapped peers: ``peer_id`` is its index in
    its population entry, ``delivers`` whether its messages this round reach anyone."""

    peer_id: Any = None
    delivers: Any = None

    def receive(self, port: str) -> list:
        if port in self.inbox:
            return list(self.inbox[port])
        if port in self.outbox:
            return self._exchange(port)
        raise StepError(f"nothing was delivered on port {port!r}")

    def _exchange(self, port: str) -> list:
        """Every running peer's payload on ``port``, stacked, and which were sent to me."""
        leaves, peers = self.outbox[port]
        stacked = [jax.lax.all_gather(leaf, PEER_AXIS) for leaf in leaves]
        addressed = jax.lax.all_gather(jnp.atleast_1d(jnp.asarray(peers)), PEER_AXIS)
        sent = jax.lax.all_gather(self.delivers, PEER_AXIS)
        return [*stacked, sent & jnp.any(addressed == self.peer_id, axis=-1)]
